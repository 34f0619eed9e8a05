"""Internals of the plan parser: line scanning, field readers, graph checks, batch selection.

`plan_parser.parse_plan` is the public entry point.
"""
