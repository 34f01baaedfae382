"""The Hugging Face Hub, asked once whether it can be reached before anything is downloaded.

Without a network huggingface_hub retries every request five times with growing waits (about a
minute for one timm model) before it looks in its cache. One TCP connection to the hub's host,
bounded by PROBE_TIMEOUT_S, tells first; when it fails, files come from the local cache only,
and a file that is not there is one clear error instead of a minute of retries.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

#: Seconds the probe may take, name resolution and connection together.
PROBE_TIMEOUT_S = 5.0


def unreachable_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached (offline mode, no DNS, no connection), or None when it can."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    parts = urlsplit(constants.ENDPOINT)
    address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    outcome: list[str | None] = []

    def connect() -> None:  # name resolution has no timeout of its own: the thread bounds it
        try:
            with socket.create_connection(address, timeout=timeout):
                outcome.append(None)
        except OSError as error:
            outcome.append(error.strerror or str(error))

    probe = threading.Thread(target=connect, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    where = f"{address[0]}:{address[1]}"
    if not outcome:
        return f"{where}: no answer within {timeout:g} s"
    return None if outcome[0] is None else f"{where}: {outcome[0]}"


def cached_file(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> str | None:
    """The first of ``filenames`` that huggingface_hub's cache holds for ``repo_id``, without the network."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(found, str):
            return found
    return None


def download(repo_id: str, filename: str) -> str:
    """A file of a hub repository: downloaded where the hub is reachable, else from the local cache.

    Raises LookupError with one line saying the hub is unreachable when the cache lacks the file.
    """
    from huggingface_hub import hf_hub_download

    reason = unreachable_reason()
    if reason is None:
        return hf_hub_download(repo_id=repo_id, filename=filename)
    found = cached_file(repo_id, (filename,))
    if found is None:
        raise LookupError(f"the Hugging Face Hub is unreachable ({reason}) and {filename} is not in the local cache")
    return found
