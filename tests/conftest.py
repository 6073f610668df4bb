import multiprocessing
import multiprocessing.connection

import numpy as np
import pytest

from tracker.hand_model import HandModel


def end_leaked_children(grace_s: float = 5.0) -> list[str]:
    """Kill the multiprocessing children still alive; returns their names.

    At exit multiprocessing terminates its daemonic children and then joins them. A child
    that ignores SIGTERM (data-loader workers do, so that a stop sent to the process group
    ends a training run cleanly) would keep the test run from exiting, for as long as the
    child lives.
    """
    # One whose sentinel is ready has ended, even if it reads as alive (something else
    # reaped it, and waitpid's ECHILD reads as "not started yet"): its pid may be another's now.
    leaked = [child for child in multiprocessing.active_children() if not multiprocessing.connection.wait([child.sentinel], timeout=0)]
    for child in leaked:
        child.kill()
    for child in leaked:
        child.join(grace_s)
    return [f"{child.name} (pid {child.pid})" for child in leaked]


def pytest_sessionfinish(session, exitstatus):
    leaked = end_leaked_children()
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "child processes outlived the tests and were killed: " + ", ".join(leaked)
        if reporter is not None:
            reporter.write_line(f"WARNING: {message}", yellow=True)


@pytest.fixture(autouse=True)
def onnxruntime_unless_asked(request, monkeypatch):
    """The tests of the command line expect its CPU backend, whose settings (workers, frames in
    flight) they check; on a machine whose torch sees a GPU its automatic choice would be
    torch-cuda. The GPU backends have tests of their own (tests/test_backends.py)."""
    if request.node.get_closest_marker("automatic_backend") is None:
        import tracker.backends

        monkeypatch.setattr(tracker.backends, "automatic_backend", lambda: tracker.backends.CPU_BACKEND)


@pytest.fixture(scope="session")
def hand_model() -> HandModel:
    return HandModel.load()


def export_small_network(hand_model: HandModel, config, out_dir, cube_size_m: float):
    """Export a small randomly initialised Dual Grid Net (same graph, fewer channels) that
    stands in for the trained one; returns the network (eval mode)."""
    import torch

    from tracker.crop import CropFrame
    from tracker.network import DualGridNet
    from tracker.weights import export_weights

    torch.manual_seed(0)
    network = DualGridNet(hand_model.mesh_coords, config)
    # Train-mode passes move BatchNorm's running statistics off their (0, 1) initial values,
    # so an export that folded or dropped them would change the outputs and fail parity.
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(torch.randn(4, 1, config.crop_size, config.crop_size))
    network.eval()
    export_weights(network, cube_size_m, out_dir, crop_frame=CropFrame.CAMERA)
    return network


def closest_points_on_triangles(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Closest point on each of T triangles for each of P points: (P, T, 3).

    points (P, 3), triangles (T, 3, 3). Region tests after Ericson, Real-Time Collision
    Detection 5.1.5, vectorised; written independently of the renderer so tests that use
    it check the renderer rather than restate it.
    """
    p = points[:, None, :]
    a, b, c = (triangles[None, :, i, :] for i in range(3))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.sum(ab * ap, -1), np.sum(ac * ap, -1)
    bp = p - b
    d3, d4 = np.sum(ab * bp, -1), np.sum(ac * bp, -1)
    cp = p - c
    d5, d6 = np.sum(ab * cp, -1), np.sum(ac * cp, -1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v = vb / denom
        w = vc / denom
        result = a + ab * v[..., None] + ac * w[..., None]
        # Edge regions.
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    edge_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    edge_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    edge_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    result = np.where(edge_bc[..., None], b + (c - b) * t_bc[..., None], result)
    result = np.where(edge_ac[..., None], a + ac * t_ac[..., None], result)
    result = np.where(edge_ab[..., None], a + ab * t_ab[..., None], result)
    # Vertex regions.
    result = np.where(((d6 >= 0) & (d5 <= d6))[..., None], c, result)
    result = np.where(((d3 >= 0) & (d4 <= d3))[..., None], b, result)
    result = np.where(((d1 <= 0) & (d2 <= 0))[..., None], a, result)
    return result


def point_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray):
    """(distance (P,), nearest face (P,), closest point (P, 3)) by brute force."""
    closest = closest_points_on_triangles(points.astype(np.float64), vertices[faces].astype(np.float64))
    dist = np.linalg.norm(closest - points[:, None, :], axis=-1)
    nearest = np.argmin(dist, axis=1)
    idx = np.arange(len(points))
    return dist[idx, nearest], nearest, closest[idx, nearest]


@pytest.fixture
def no_camera(monkeypatch):
    """No RealSense camera attached, whatever is plugged into the machine running the tests."""
    try:
        import pyrealsense2 as rs
    except ImportError:  # no SDK: no camera either
        return

    class NothingConnected:
        def query_devices(self):
            return []

    monkeypatch.setattr(rs, "context", NothingConnected)


def sdk_frames_held(generator) -> list[str]:
    """The names under which a suspended source generator (and the generators it delegates
    to) keeps librealsense frames, or a frame queue that may hold some, while its consumer
    has the frame it yielded."""
    import pyrealsense2 as rs

    held = []
    while generator is not None:
        held += [name for name, value in generator.gi_frame.f_locals.items() if isinstance(value, (rs.frame, rs.frame_queue))]
        generator = generator.gi_yieldfrom
    return held


def sdk_objects_in_running_streams(code_objects) -> list[tuple[bool, list[str]]]:
    """For each running frame of ``code_objects`` (the sources' generators) on any thread:
    (whether on this thread, the names under which it holds librealsense frames or frame
    queues). Called as a pipeline stops, it shows what would be freed after the stop."""
    import sys
    import threading

    import pyrealsense2 as rs

    found = []
    for ident, frame in sys._current_frames().items():
        while frame is not None:
            if frame.f_code in code_objects:
                held = [name for name, value in frame.f_locals.items() if isinstance(value, (rs.frame, rs.frame_queue))]
                found.append((ident == threading.get_ident(), held))
            frame = frame.f_back
    return found


def sdk_frames_in_traceback(error: BaseException) -> list[str]:
    """The librealsense frames an error's traceback (and its causes') keeps alive."""
    import pyrealsense2 as rs

    held = []
    while error is not None:
        tb = error.__traceback__
        while tb is not None:
            held += [f"{tb.tb_frame.f_code.co_name}:{name}" for name, value in tb.tb_frame.f_locals.items() if isinstance(value, rs.frame)]
            tb = tb.tb_next
        error = error.__cause__
    return held

