from dihal.cli import app

app()
