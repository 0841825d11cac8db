"""The control socket's protocol: one JSON object per line each way.

Request:  {"cmd": "status"} | {"cmd": "sim", "action": "plug", "connector": 1, ...}
Response: {"ok": true, "result": {...}} | {"ok": false, "error": "one readable line"}
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_LINE = 64 * 1024


class ControlError(Exception):
    """The daemon could not be reached or refused the request; the message is one readable line."""


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def request(socket_path: str, payload: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send one request and return its result (blocking; for evsectl and tests)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(encode(payload))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"evsed is not running (no daemon listening on {socket_path})") from None
    except PermissionError:
        raise ControlError(f"permission denied on {socket_path} (are you in the evsed group?)") from None
    except TimeoutError:
        raise ControlError(f"evsed did not answer within {timeout:g} s on {socket_path}") from None
    except OSError as exc:
        raise ControlError(f"cannot reach evsed on {socket_path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise ControlError("evsed sent an unreadable answer") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        raise ControlError(str(answer.get("error") if isinstance(answer, dict) else "bad answer"))
    return answer.get("result")
