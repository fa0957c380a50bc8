#!/usr/bin/env python3
"""Test helper for licence_e2e.sh: the host as a man in the middle between the
enclave and the key service. Forwards every request; in CloisterRenewLicence
answers it replaces LicenceKey with the host's own key (DER file argv[2]).
Prints 'listening on 127.0.0.1:PORT'. Loopback only; not installed."""
import base64, http.client, http.server, json, sys, urllib.parse

upstream = urllib.parse.urlparse(sys.argv[1])
own_key = base64.b64encode(open(sys.argv[2], "rb").read()).decode()


class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        c = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
        c.request("POST", self.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        if "CloisterRenewLicence" in self.headers.get("X-Amz-Target", "") and r.status == 200:
            j = json.loads(data)
            j["LicenceKey"] = own_key
            data = json.dumps(j).encode()
            sys.stderr.write("mitm: substituted the licence key\n")
            sys.stderr.flush()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on 127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
