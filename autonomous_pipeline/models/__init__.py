"""Pydantic payloads shared by the parser, the starter, workflows and activities."""
