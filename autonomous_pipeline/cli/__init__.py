"""Command-line front end: argument parsing, plan loading, rendering. Entry points stay thin."""
