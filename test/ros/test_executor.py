"""BoundedThreadsExecutor: with every thread blocked in a service callback it waits instead of spinning,
and a thread kept free keeps a subscription served (the node's sizing rule). Real rclpy, real DDS."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import Int32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from infinipot_ros.executor import BoundedThreadsExecutor  # noqa: E402


def _saturate(executor_cls: Any, threads: int, blocking_calls: int, offset: int) -> dict[str, float]:
    """`blocking_calls` service calls that block until released, on an executor of `threads`; meanwhile
    20 messages are published. Returns the process CPU share while blocked and the messages served."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = Context()
    rclpy.init(context=context, domain_id=(os.getpid() + offset) % 100 + 1)
    release = threading.Event()
    ticks: list[int] = []
    executor = executor_cls(num_threads=threads, context=context)
    client_executor = SingleThreadedExecutor(context=context)
    server = rclpy.create_node("executor_test_server", context=context)
    client_node = rclpy.create_node("executor_test_client", context=context)
    spinners: list[threading.Thread] = []
    try:
        def block(_request: Any, response: Any) -> Any:
            release.wait(30.0)
            response.success = True
            return response

        server.create_service(Trigger, "/block", block, callback_group=ReentrantCallbackGroup())
        server.create_subscription(Int32, "/ticks", lambda m: ticks.append(m.data), 100,
                                   callback_group=MutuallyExclusiveCallbackGroup())
        executor.add_node(server)
        client_executor.add_node(client_node)
        client = client_node.create_client(Trigger, "/block")
        publisher = client_node.create_publisher(Int32, "/ticks", 100)
        spinners = [threading.Thread(target=executor.spin, daemon=True),
                    threading.Thread(target=client_executor.spin, daemon=True)]
        for t in spinners:
            t.start()
        assert client.wait_for_service(10.0)
        deadline = time.monotonic() + 10.0
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        futures = [client.call_async(Trigger.Request()) for _ in range(blocking_calls)]
        time.sleep(1.0)  # every call is now inside its callback
        cpu0, wall0 = time.process_time(), time.monotonic()
        for i in range(20):
            publisher.publish(Int32(data=i))
            time.sleep(0.05)
        time.sleep(0.5)
        cpu_share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        served_while_blocked = len(ticks)
        release.set()
        deadline = time.monotonic() + 10.0
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"cpu_share": cpu_share, "served_while_blocked": served_while_blocked,
                "answered": sum(1 for f in futures if f.done() and f.result().success)}
    finally:
        release.set()
        executor.shutdown(timeout_sec=2.0)
        client_executor.shutdown(timeout_sec=2.0)
        for t in spinners:
            t.join(timeout=5.0)
        server.destroy_node()
        client_node.destroy_node()
        rclpy.shutdown(context=context)


def test_plain_executor_spins_when_its_threads_are_blocked() -> None:
    """The rclpy behaviour this executor exists for (if rclpy fixes it, this test says so)."""
    plain = _saturate(MultiThreadedExecutor, threads=3, blocking_calls=5, offset=41)
    assert plain["cpu_share"] > 0.5, plain


def test_bounded_executor_waits_instead_of_spinning() -> None:
    bounded = _saturate(BoundedThreadsExecutor, threads=3, blocking_calls=5, offset=42)
    assert bounded["cpu_share"] < 0.2, bounded
    assert bounded["answered"] == 5, bounded  # queued calls run once threads free up


def test_a_free_thread_keeps_subscriptions_served() -> None:
    bounded = _saturate(BoundedThreadsExecutor, threads=4, blocking_calls=3, offset=43)
    assert bounded["served_while_blocked"] == 20, bounded
    assert bounded["cpu_share"] < 0.2 and bounded["answered"] == 3, bounded
