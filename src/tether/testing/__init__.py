"""Fakes for what cannot be real offline: a scripted model and a clock that moves when told."""

from ._anthropic_server import AnthropicServer as AnthropicServer
from ._clock import FakeClock as FakeClock
from ._faults import FaultProxy as FaultProxy
from ._scripted import ScriptedModel as ScriptedModel
from ._scripted import call as call

__all__ = ["AnthropicServer", "FakeClock", "FaultProxy", "ScriptedModel", "call"]
