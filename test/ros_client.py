"""An rclpy client node for tests, shared by test/ros and test/reliability (loaded by path from their
conftests, since tests cannot import each other's conftest under importlib mode)."""
from __future__ import annotations

import os
import time
from typing import Any, Callable


class RosClient:
    """An rclpy node in its own context in the pytest process, spun by hand."""

    def __init__(self, domain: int, name: str = "infinipot_test_client", *, qos: Any = 10,
                 timeout: float = 30.0) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}
        self.default_qos, self.default_timeout = qos, timeout

    def subscribe(self, msg_type: Any, topic: str, qos: Any = None) -> list[Any]:
        qos = self.default_qos if qos is None else qos
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, box.append, qos)
        return box

    def spin_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, client: Any, request: Any, timeout: float | None = None) -> Any:
        timeout = self.default_timeout if timeout is None else timeout
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.spin_until(future.done, timeout)
        assert future.done(), f"no response from {client.srv_name} within {timeout}s"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)
