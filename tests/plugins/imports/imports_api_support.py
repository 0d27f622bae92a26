"""The imports API as a client sees it over HTTP, for the tests that run real ``kloyst run`` processes."""

from __future__ import annotations

from collections.abc import Callable

import requests

from kloyst.testing.processes import eventually

FINAL = {"COMPLETED", "PARTIAL_SUCCESS", "FAILED", "QUARANTINED", "CANCELLED"}


def numbers(count: int, start: int = 0) -> list[str]:
    """Valid, distinct Indian mobile numbers."""
    return [f"+9198765{i:05d}" for i in range(start, start + count)]


class ImportsApi:
    """``base`` is ``http://127.0.0.1:<port>``; every call is the vendor's whose ``headers`` these are."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    def get(self, path: str) -> dict:
        response = requests.get(f"{self.base}{path}", headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def upload(self, name: str, content: bytes) -> dict:
        response = requests.post(f"{self.base}/v1/imports", files={"file": (name, content)}, headers=self.headers,
                                 timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["import"]

    def job(self, job_id: str) -> dict:
        return self.get(f"/v1/imports/{job_id}")["import"]

    def rejected_csv(self, job_id: str) -> str:
        response = requests.get(f"{self.base}/v1/imports/{job_id}/rejected.csv", headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.content.decode("utf-8-sig")

    def wait(self, job_id: str, done: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
        return eventually(lambda: self.job(job_id), done, f"import {job_id} {what}", timeout=timeout, pause=0.1)

    def map_columns(self, job_id: str, columns: dict) -> None:
        response = requests.put(f"{self.base}/v1/imports/{job_id}/mapping", headers=self.headers, timeout=10,
                                json={"columns": columns, "merge_strategy": "MERGE_LABELS"})
        assert response.status_code == 200, response.text

    def import_file(self, name: str, content: bytes, columns: dict, *, timeout: float = 30) -> dict:
        """Upload, wait for the headers, map, and return the job once it is final."""
        created = self.upload(name, content)
        self.wait(created["id"], lambda job: job["status"] != "UPLOADED", "to leave UPLOADED", timeout)
        self.map_columns(created["id"], columns)
        return self.wait(created["id"], lambda job: job["status"] in FINAL, "to finish", timeout)
