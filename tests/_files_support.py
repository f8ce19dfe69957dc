"""Talking to a server's files endpoints as the uploader does, one call at a time:
experiments, blob PUTs (whole or in part), save records."""

from __future__ import annotations

import hashlib
import time
import uuid


def new_experiment(api, namespace="default") -> int:
    answer = api.post("/experiments", json={"namespace": namespace, "prefix": f"files/{uuid.uuid4().hex[:8]}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def data(size: int, seed: str = "") -> bytes:
    block = hashlib.sha256(f"{size}{seed}{uuid.uuid4()}".encode()).digest() * 4096  # 128 KiB
    return (block * (size // len(block) + 1))[:size]


def put(api, exp_id, payload: bytes, size: int | None = None, offset: int = 0, upload: str | None = None,
        checksum: str | None = None):
    size = len(payload) + offset if size is None else size
    return api.put(f"/experiments/{exp_id}/blobs/{checksum}", params={"upload": upload, "offset": offset, "size": size},
                   content=payload)


def save_record(file_id: str, content: bytes, path="/models", filename="model.pt", **extra) -> dict:
    return {"op": "save", "id": file_id, "experimentId": "x", "path": path, "filename": filename, "description": None,
            "tags": [], "bindrs": [], "contentType": "application/octet-stream", "sizeBytes": len(content),
            "checksum": hashlib.sha256(content).hexdigest(), "metadata": None,
            "uploadedAt": "2026-01-01T00:00:00Z", "timestamp": time.time(), **extra}


def upload(api, exp_id, content: bytes) -> str:
    checksum = hashlib.sha256(content).hexdigest()
    answer = put(api, exp_id, content, upload=uuid.uuid4().hex, checksum=checksum)
    assert answer.status_code == 200 and answer.json()["present"], answer.text
    return checksum
