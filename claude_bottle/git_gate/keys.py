"""Private keys: whether the gate can use an identity_file unattended."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path


def identity_file_problem(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory, not a private key"
    except PermissionError:
        return "not readable (permission denied)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return private_key_problem(data)


def private_key_problem(data: bytes) -> str | None:
    """Why the gate could not use this key in batch mode, or None."""
    text = data.decode("ascii", errors="replace").strip()
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        return "is a public key; give the private key (the file without .pub)"
    if not text.startswith("-----BEGIN ") or "PRIVATE KEY-----" not in text.splitlines()[0]:
        return "is not a private key in OpenSSH or PEM format"
    if "ENCRYPTED" in text:
        return "is protected by a passphrase; the gate runs unattended and needs a key without one"
    if text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----"):
        body = "".join(line for line in text.splitlines()[1:] if not line.startswith("-----"))
        try:
            blob = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return "is not a valid OpenSSH private key"
        magic = b"openssh-key-v1\0"
        if not blob.startswith(magic) or len(blob) < len(magic) + 4:
            return "is not a valid OpenSSH private key"
        size = int.from_bytes(blob[len(magic):len(magic) + 4], "big")
        cipher = blob[len(magic) + 4:len(magic) + 4 + size]
        if cipher != b"none":
            return "is protected by a passphrase; the gate runs unattended and needs a key without one"
    return None
