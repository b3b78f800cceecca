"""`flask --app app …` entry point."""

from receiver import create_app

app = create_app()
