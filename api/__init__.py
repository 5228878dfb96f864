"""The faces of the service: the Flask app, its blueprints and the `fraud-service` command line."""
