#!/usr/bin/python3
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A verifying front for s3rver, used by the S3 tests.  s3rver does not
# check SigV4 signatures (any secret is accepted), so this reverse
# proxy recomputes every request's signature with botocore's own signer
# and refuses a mismatch the way S3 does (403, XML error
# SignatureDoesNotMatch); a request that verifies is forwarded
# unchanged to s3rver and the reply streamed back.
#
#   s3-verify-proxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:PORT \
#       --access-key K --secret-key S [--region us-east-1] \
#       [--port-file FILE] [--log FILE]
#
# Checked: the Authorization header (AWS4-HMAC-SHA256, known access
# key, scope DATE/REGION/s3/aws4_request), x-amz-date present and within
# 15 minutes, the signature over the method, the path and query as
# received, the signed headers with their received values and the
# x-amz-content-sha256 value as payload hash; when that value is a hex
# sha256 it is also checked against the body (XAmzContentSHA256Mismatch).
# If s3rver is down the proxy answers 503 ServiceUnavailable.

import argparse
import datetime
import hashlib
import hmac
import http.client
import http.server
import os
import re
import socket
import sys
import threading
import uuid

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

MAX_SKEW = 15 * 60
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    "expect",
}
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<sig>[0-9a-fA-F]+)\s*$")
HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class Refused(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ExactS3SigV4Auth(S3SigV4Auth):
    """botocore's S3 signer, signing exactly the headers the client
    named in SignedHeaders (botocore alone would pick its own set and
    leave out e.g. user-agent)."""

    def __init__(self, credentials, region, signed):
        super().__init__(credentials, "s3", region)
        self._signed = signed

    def headers_to_sign(self, request):
        hmap = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                hmap.add_header(name, value)
        return hmap


def expected_signature(args, method, target, headers, signed, amz_date,
                       region, payload_hash):
    """The signature botocore computes for this request."""
    req = AWSRequest(method=method, url="http://proxy" + target)
    hmap = HTTPHeaders()
    for name in signed:
        values = headers.get_all(name)
        if values is None:
            if name == "host":
                values = [headers.get("Host", "")]
            else:
                raise Refused(403, "SignatureDoesNotMatch",
                              "signed header %s is missing" % name)
        for v in values:
            hmap.add_header(name, v)
    if "X-Amz-Content-SHA256" not in hmap:
        hmap["X-Amz-Content-SHA256"] = payload_hash
    req.headers = hmap
    req.context["timestamp"] = amz_date
    creds = Credentials(args.access_key, args.secret_key)
    signer = ExactS3SigV4Auth(creds, region, signed)
    canonical = signer.canonical_request(req)
    sts = signer.string_to_sign(req, canonical)
    return signer.signature(sts, req), canonical


def verify(args, method, target, headers, body):
    """Raise Refused unless the request is signed right."""
    auth = headers.get("Authorization")
    if not auth:
        raise Refused(403, "AccessDenied", "Access Denied (no Authorization)")
    m = AUTH_RE.match(auth.strip())
    if not m:
        raise Refused(400, "AuthorizationHeaderMalformed",
                      "The authorization header is malformed")
    cred = m.group("cred").split("/")
    if len(cred) != 5 or cred[3] != "s3" or cred[4] != "aws4_request":
        raise Refused(400, "AuthorizationHeaderMalformed",
                      "The authorization header is malformed; bad Credential")
    key, scope_date, region = cred[0], cred[1], cred[2]
    if key != args.access_key:
        raise Refused(403, "InvalidAccessKeyId",
                      "The AWS Access Key Id you provided does not exist "
                      "in our records.")
    if region != args.region:
        raise Refused(400, "AuthorizationHeaderMalformed",
                      "the region '%s' is wrong; expecting '%s'"
                      % (region, args.region))
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise Refused(403, "AccessDenied",
                      "AWS authentication requires a valid x-amz-date header")
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    except ValueError:
        raise Refused(403, "AccessDenied", "x-amz-date is not a date")
    when = when.replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    if abs((now - when).total_seconds()) > MAX_SKEW:
        raise Refused(403, "RequestTimeTooSkewed",
                      "The difference between the request time and the "
                      "current time is too large.")
    if scope_date != amz_date[:8]:
        raise Refused(400, "AuthorizationHeaderMalformed",
                      "the credential scope date does not match x-amz-date")
    payload_hash = headers.get("x-amz-content-sha256")
    if not payload_hash:
        raise Refused(400, "InvalidRequest",
                      "Missing required header for this request: "
                      "x-amz-content-sha256")
    signed = m.group("signed").lower().split(";")
    if "host" not in signed:
        raise Refused(400, "AuthorizationHeaderMalformed",
                      "SignedHeaders must include host")
    want, canonical = expected_signature(args, method, target, headers,
                                         signed, amz_date, region,
                                         payload_hash)
    if not hmac.compare_digest(want, m.group("sig").lower()):
        if args.debug:
            sys.stderr.write("canonical request:\n%s\n" % canonical)
        raise Refused(403, "SignatureDoesNotMatch",
                      "The request signature we calculated does not match "
                      "the signature you provided. Check your key and "
                      "signing method.")
    if HEX64_RE.match(payload_hash):
        if hashlib.sha256(body).hexdigest() != payload_hash.lower():
            raise Refused(400, "XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does "
                          "not match what was computed.")
    return canonical


def error_xml(code, message, resource):
    esc = (lambda s: s.replace("&", "&amp;").replace("<", "&lt;")
           .replace(">", "&gt;"))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            "<Error><Code>%s</Code><Message>%s</Message>"
            "<Resource>%s</Resource><RequestId>%s</RequestId></Error>\n"
            % (code, esc(message), esc(resource),
               uuid.uuid4().hex[:16].upper())).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "s3-verify-proxy"
    upstream_conn = None

    def log_message(self, fmt, *a):
        pass

    def log_line(self, verdict):
        self.server.log("%s %s %s" % (self.command, self.path, verdict))

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers up to the empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n",
                                                             b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_error_xml(self, status, code, message):
        body = error_xml(code, message, self.path)
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.log_line("refused %d %s" % (status, code))

    def forward(self, body):
        up = self.server.upstream
        headers = {}
        for name, value in self.headers.items():
            if name.lower() in HOP_BY_HOP or name.lower() in (
                    "host", "content-length"):
                continue
            headers.setdefault(name, [])
            headers[name].append(value)
        for attempt in (0, 1):
            reused = self.upstream_conn is not None
            if not reused:
                self.upstream_conn = http.client.HTTPConnection(
                    up[0], up[1], timeout=60)
            conn = self.upstream_conn
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                conn.putheader("Host", "%s:%d" % up)
                for name, values in headers.items():
                    for v in values:
                        conn.putheader(name, v)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                return conn.getresponse()
            except (ConnectionError, http.client.HTTPException,
                    socket.timeout, OSError):
                conn.close()
                self.upstream_conn = None
                if not reused or attempt == 1:
                    raise
        raise ConnectionError("unreachable")

    def handle_any(self):
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        try:
            verify(self.server.args, self.command, self.path, self.headers,
                   body)
        except Refused as e:
            self.send_error_xml(e.status, e.code, e.message)
            return
        try:
            resp = self.forward(body)
        except (ConnectionError, http.client.HTTPException, socket.timeout,
                OSError) as e:
            self.send_error_xml(503, "ServiceUnavailable",
                                "upstream unreachable: %s" % e)
            return
        self.send_response_only(resp.status, resp.reason)
        length = None
        for name, value in resp.getheaders():
            ln = name.lower()
            if ln in HOP_BY_HOP:
                continue
            if ln == "content-length":
                length = value
            self.send_header(name, value)
        no_body = (self.command == "HEAD" or resp.status in (204, 304)
                   or 100 <= resp.status < 200)
        chunked = not no_body and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while not no_body:
            data = resp.read1(65536) if hasattr(resp, "read1") \
                else resp.read(65536)
            if not data:
                break
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        if no_body:
            resp.read()
        if resp.will_close:
            self.upstream_conn.close()
            self.upstream_conn = None
        self.wfile.flush()
        self.log_line("ok %d" % resp.status)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = \
        handle_any

    def finish(self):
        super().finish()
        if self.upstream_conn is not None:
            self.upstream_conn.close()
            self.upstream_conn = None


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5.  r3map-s3 opens up to
    # `connections` (64) at once for one large request: the SYNs that
    # overflow the queue are dropped and retried by the kernel after 1,
    # 3, 7, 15, 31 s, and under ASan one GET ran past the plugin's 30 s
    # timeout.  A real S3 endpoint takes such a burst.
    request_queue_size = 1024

    def __init__(self, addr, args):
        super().__init__(addr, Handler)
        self.args = args
        host, port = args.upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self._log_lock = threading.Lock()
        self._log = open(args.log, "a", buffering=1) if args.log else None

    def log(self, line):
        if self._log:
            with self._log_lock:
                self._log.write(line + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--port-file")
    p.add_argument("--log")
    p.add_argument("--debug", action="store_true",
                   help="print the canonical request of a mismatch")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = Server((host, int(port)), args)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % server.server_address[1])
        os.rename(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
