"""The HTTP edge: the Flask application, its health endpoints and error shapes."""
