"""The metallb.io configuration: one pure parser, ``parse(resources) -> Config`` or ``ConfigError``.

The webhook, the controller and the agent all call the same function, so a configuration is
valid or invalid everywhere for the same reason. Nothing in this package does I/O or imports
``kubernetes``, ``pyroute2`` or ``bcc``.
"""
from .types import *  # noqa: F401,F403
