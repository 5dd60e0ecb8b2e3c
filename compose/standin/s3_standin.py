"""Stand-in for MinIO: moto's S3 server on 0.0.0.0:9000, with the raw zone's bucket made
at start (minio-init's job upstream). Memory storage: a restart empties it, as in the
embedded stack."""

import os
import signal
import subprocess
import sys
import time

import boto3

bucket = os.environ.get("BI_S3_BUCKET", "cord-raw")
server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", "9000"])
signal.signal(signal.SIGTERM, lambda *_: server.terminate())
client = boto3.client(
    "s3",
    endpoint_url="http://127.0.0.1:9000",
    region_name="us-east-1",
    aws_access_key_id=os.environ["BI_S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["BI_S3_SECRET_KEY"],
)
for _ in range(100):
    try:
        client.create_bucket(Bucket=bucket)
        print(f"s3 stand-in: bucket {bucket} ready", flush=True)
        open("/tmp/bucket.ready", "w").close()
        break
    except Exception:  # noqa: BLE001 - moto not listening yet
        if server.poll() is not None:
            sys.exit(server.returncode)
        time.sleep(0.2)
sys.exit(server.wait())
