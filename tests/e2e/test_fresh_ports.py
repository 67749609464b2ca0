"""The fixtures' own promise: a server that finds its reserved port taken
(by something outside the port protocol) is started again on a fresh
port, with a line saying so, instead of failing the test."""

import socket

import requests

from conftest import Server, dev_args


def test_a_server_whose_port_is_taken_starts_again_on_a_fresh_one(strongroom_bin, tmp_path, capfd):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        offered = []

        def args(port: int) -> list[str]:
            offered.append(port)
            return dev_args(taken if len(offered) == 1 else port)

        srv = Server(strongroom_bin, tmp_path, args)
        try:
            assert len(offered) == 2, offered
            assert srv.port.number == offered[1] != taken
            assert requests.get(f"{srv.addr}/v1/sys/health", timeout=5).status_code == 200
            assert "address already in use" in srv.log().lower()
            assert "restarting it on fresh ports" in capfd.readouterr().err
        finally:
            srv.stop()
