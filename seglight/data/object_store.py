"""Where a streamed dataset lives: a local folder or an S3 (or S3-compatible) prefix
s3://bucket/prefix. LitData moves the chunks; this reads and writes the few small files seglight
adds (the manifest) and checks the place before a conversion, with boto3, the client LitData
itself uses for S3.

Credentials and endpoint: `storage_options` (boto3 client arguments: endpoint_url,
aws_access_key_id, aws_secret_access_key, region_name, ...), else boto3's usual sources: the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_PROFILE, ...) and
~/.aws. The same options go to LitData, so both reach the same store.
"""

import os
from pathlib import Path
from typing import Any

from seglight.errors import ConfigError, DataError

S3 = "s3://"


def is_remote(location: str) -> bool:
    return "://" in str(location)


def check_location(location: str, what: str) -> str:
    """`location` as given, if it is a local path or s3://bucket[/prefix]."""
    location = str(location)
    if is_remote(location):
        if not location.startswith(S3) or not location[len(S3) :].split("/")[0]:
            raise ConfigError(
                f"{what}: {location!r}: expected a local folder or s3://bucket/prefix (S3 or an "
                "S3-compatible store; set its endpoint in storage_options.endpoint_url)"
            )
        return location.rstrip("/")
    return location


def _bucket_key(location: str, name: str = "") -> tuple[str, str]:
    bucket, _, prefix = location[len(S3) :].partition("/")
    key = "/".join(part for part in (prefix.strip("/"), name) if part)
    return bucket, key


def boto_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """`storage_options` as boto3 client arguments: a `config` given as a dict (from YAML, e.g.
    {retries: {max_attempts: 3}, connect_timeout: 5}) becomes a botocore Config."""
    options = dict(storage_options or {})
    if isinstance(options.get("config"), dict):
        from botocore.config import Config

        try:
            options["config"] = Config(**options["config"])
        except TypeError as e:
            raise ConfigError(f"storage_options.config: {e} (botocore.config.Config's "
                              "arguments)") from None  # fmt: skip
    return options


def client(storage_options: dict[str, Any] | None):
    """A boto3 S3 client with `storage_options` as its arguments."""
    import boto3  # LitData's own dependency; imported here only when S3 is used

    return boto3.client("s3", **boto_options(storage_options))


def endpoint(storage_options: dict[str, Any] | None) -> str:
    """The S3 endpoint these options reach (for messages)."""
    options = storage_options or {}
    return (options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3")  # fmt: skip


def allow_plain_http(storage_options: dict[str, Any] | None) -> None:
    """Let LitData reach an http:// endpoint (a MinIO or test server) when one is configured.

    LitData downloads chunks through obstore when it is installed (it is a LitData
    dependency), with client options that leave out obstore's `allow_http`, so an http
    endpoint fails with "builder error" (AWS_ALLOW_HTTP cannot override them); private LitData
    API, checked by tests/data/test_streaming_s3.py."""
    if not endpoint(storage_options).startswith("http://"):
        return
    from litdata.streaming import downloader

    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = True


def _store_error(location: str, storage_options, error: Exception) -> DataError:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        return DataError(f"{location}: S3 refused the request ({code}: {error}); check the "
                         "bucket name and the credentials")  # fmt: skip
    if isinstance(error, BotoCoreError):
        return DataError(f"{location}: cannot reach the S3 endpoint "
                         f"{endpoint(storage_options)}: {error}")  # fmt: skip
    raise error


def read_file(location: str, name: str, storage_options=None) -> bytes | None:
    """The bytes of `name` in the folder or prefix `location`; None if it does not exist."""
    if not is_remote(location):
        path = Path(location) / name
        return path.read_bytes() if path.is_file() else None
    bucket, key = _bucket_key(location, name)
    try:
        return client(storage_options).get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as e:  # noqa: BLE001 - boto3's errors, sorted by _store_error
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise _store_error(location, storage_options, e) from None


def write_file(location: str, name: str, data: bytes, storage_options=None) -> None:
    if not is_remote(location):
        path = Path(location) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader sees the whole file or none
        return
    bucket, key = _bucket_key(location, name)
    try:
        client(storage_options).put_object(Bucket=bucket, Key=key, Body=data)
    except Exception as e:  # noqa: BLE001
        raise _store_error(location, storage_options, e) from None


def delete_file(location: str, name: str, storage_options=None) -> None:
    if not is_remote(location):
        (Path(location) / name).unlink(missing_ok=True)
        return
    bucket, key = _bucket_key(location, name)
    try:
        client(storage_options).delete_object(Bucket=bucket, Key=key)
    except Exception as e:  # noqa: BLE001
        raise _store_error(location, storage_options, e) from None


def list_names(location: str, storage_options=None, limit: int = 20) -> list[str]:
    """Up to `limit` names of the files already in the folder or prefix (empty: a fresh place;
    a missing folder or bucket prefix counts as empty)."""
    if not is_remote(location):
        folder = Path(location)
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{location}: is a file; give a folder for the streamed dataset")
        return sorted(p.name for p in folder.iterdir())[:limit] if folder.is_dir() else []
    bucket, prefix = _bucket_key(location)
    try:
        listing = client(storage_options).list_objects_v2(
            Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=limit
        )
    except Exception as e:  # noqa: BLE001
        raise _store_error(location, storage_options, e) from None
    return [item["Key"].rsplit("/", 1)[-1] for item in listing.get("Contents", [])]
