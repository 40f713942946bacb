"""The app builder makes the plain `Gateway` class the ingress deployment."""

from __future__ import annotations

from serve.app import GatewayDeployment
from serve.config import DRAIN_S, GATEWAY_DEPLOYMENT
from serve.gateway import Gateway, app


def test_the_gateway_is_a_plain_class_made_the_ingress_deployment_by_the_builder() -> None:
    assert not hasattr(Gateway, "func_or_class")  # no Ray decoration on the class itself
    assert issubclass(GatewayDeployment.func_or_class, Gateway)
    assert GatewayDeployment.name == GATEWAY_DEPLOYMENT
    assert GatewayDeployment.user_config == {"experiments": []}
    config = GatewayDeployment._deployment_config
    assert config.graceful_shutdown_timeout_s == DRAIN_S
    assert config.max_ongoing_requests == 1024


def test_every_gateway_route_is_a_method_of_the_class() -> None:
    paths = {
        route.path: route.endpoint.__qualname__
        for route in app.routes
        if getattr(route, "endpoint", None) is not None and route.path.startswith(("/v1", "/h"))
    }
    assert paths["/v1/chat/completions"] == "Gateway.chat_completions"
    assert paths["/v1/feedback"] == "Gateway.feedback"
    assert paths["/health"] == "Gateway.health"
