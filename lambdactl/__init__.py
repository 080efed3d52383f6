"""lambdactl: the command-line client of lambdad."""
