"""`om.flush(timeout)` then `os._exit()` loses nothing with a spool, however short the timeout.

delivery.md, "How the process ends": `os._exit()` is covered by a flush before it. With a spool, what the
flush waited for and that is not acknowledged when it returns must be on disk by then (its write
completed, not only handed to the writer thread), so the next process over the spool delivers it once.
The commit interval is 60 s here, so the regular cadence writes nothing in time: only the flush can.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from openmonetize import OpenMonetize
from openmonetize.testing import LocalIngestServer

KEY = "sk_spool_flush_exit_test_key"

CHILD = """
import json, os, socket
from openmonetize import OpenMonetize

silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
silent.bind(("127.0.0.1", 0))
silent.listen(64)
base_url = {{"silent": f"http://127.0.0.1:{{silent.getsockname()[1]}}", "down": {down!r}}}[{service!r}]
om = OpenMonetize(api_key={key!r}, base_url=base_url, spool_dir={spool!r}, spool_commit_interval=60,
                  flush_interval=0.01, request_timeout=60, batch_size=500)
ids = [om.track_custom_event(customer_id="c", feature_id="f", unit_type="calls", quantity=i + 1)
       for i in range({n})]
print(json.dumps({{"ids": ids, "flushed": om.flush({timeout!r})}}), flush=True)
os._exit(0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("service", ["silent", "down"])
@pytest.mark.parametrize("timeout", [0, 0.01])
def test_flush_with_a_short_timeout_then_os_exit_leaves_every_event_for_the_next_process(tmp_path: Path,
                                                                                         service: str,
                                                                                         timeout: float) -> None:
    spool = tmp_path / "spool"
    code = CHILD.format(key=KEY, down=f"http://127.0.0.1:{free_port()}", service=service, spool=str(spool),
                        n=3000, timeout=timeout)
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert out["flushed"] is False
    ids = out["ids"]
    assert len(set(ids)) == 3000
    with LocalIngestServer(api_key=KEY) as server:
        nxt = OpenMonetize(api_key=KEY, base_url=server.url, spool_dir=spool)
        nxt.start()
        assert nxt.flush(60)
        assert server.event_ids == set(ids)
        assert len(server.events) == len(ids) and server.duplicates_received == 0
        assert nxt.shutdown(10)
