"""The control plane: REST API under ``/api/v1`` over services that own all state."""

from modelport.control.app import create_control_app
from modelport.control.controller import RolloutController
from modelport.control.plane import ControlPlane

__all__ = ["ControlPlane", "RolloutController", "create_control_app"]
