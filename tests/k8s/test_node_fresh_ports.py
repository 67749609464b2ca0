"""The fixtures' own promise: a node that finds its reserved port taken
(by something outside the port protocol) is started again on a fresh
port, with a line saying so, instead of failing the test."""

import socket

import requests

from conftest import Node


def test_a_node_whose_port_is_taken_starts_again_on_a_fresh_one(strongroom_bin, processes, ports, tmp_path,
                                                                  capfd):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        offered = []

        def taken_first() -> int:
            offered.append(ports() if offered else taken)
            return offered[-1]

        config = f'storage "redb" {{\n  path = "{tmp_path / "n1.redb"}"\n}}\n'
        node = Node(processes, strongroom_bin, tmp_path, "n1", config, taken_first)
        assert len(offered) == 2, offered
        assert node.port == offered[1] != taken
        assert requests.get(f"{node.addr}/v1/sys/health", timeout=5).status_code == 501
        assert "restarting it on fresh ports" in capfd.readouterr().err
        # A restart keeps the node's (reserved) port.
        node.restart()
        assert requests.get(f"{node.addr}/v1/sys/health", timeout=5).status_code == 501
