"""Docker labels on everything the daemon creates, so a restart can find it again."""

FUNCTION = "lambda.function"
VERSION = "lambda.version"
INSTANCE = "lambda.instance"
DAEMON = "lambda.daemon"  # which lambdad (state folder) owns the object
CELL = "lambda.cell"  # a stem cell: its class; it has no function label
CLEANUP = "lambda.cleanup"  # a short-lived container emptying an instance folder
