"""Loads the conformance suite's pytest plugin for a checkout that is not pip-installed.

When the package is installed, pytest has already loaded the plugin through its `pytest11`
entry point before this file is read; loading it a second time would register it twice.
"""
import sys

pytest_plugins = [] if "conformance.plugin" in sys.modules else ["conformance.plugin"]
