"""A free TCP port on 127.0.0.1, and an embedded server started on one, for
the scripts that start servers."""
import socket
import subprocess
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_embedded(binary, data, port, *flags, stderr=subprocess.DEVNULL, wait_s=20):
    """`dynaraft embedded` on `data` and `port` (instant table transitions,
    plus `flags`); (process, endpoint URL) once it answers."""
    proc = subprocess.Popen([binary, "embedded", "--port", str(port), "--data-dir", data,
                             "--instant-transitions", *flags], stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the server did not start")
