"""Docker labels on everything the daemon creates, so a restart can find it again."""

FUNCTION = "lambda.function"
VERSION = "lambda.version"
INSTANCE = "lambda.instance"
STAMP = "lambda.stamp"  # which version of that number (FunctionVersion.stamp)
DAEMON = "lambda.daemon"  # which lambdad (state folder) owns the object
CELL = "lambda.cell"  # a stem cell: its class; it has no function label
CLEANUP = "lambda.cleanup"  # a short-lived container emptying an instance folder
LOGS = "lambda.logs"  # "channel": started with LAMBDA_LOG_CHANNEL=1, lambdad reads its log channel
LOGS_CHANNEL = "channel"
