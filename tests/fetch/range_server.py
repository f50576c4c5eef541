"""tests/fetch/range_server.py: a small HTTP server on 127.0.0.1 for the `i2i fetch` tests.

What it is: http.server on a free port, in a thread, serving in-memory files under a mode that
says how to misbehave: /ok/NAME honours Range requests (206 with Content-Range, 416 past the
end); /cut/NAME cuts the connection after `cut` bytes on the first request for it; /flip/NAME
flips one byte; /norange/NAME ignores Range (always 200); /badrange/NAME answers a Range with a
206 that starts at 0; /stall/NAME stops after 2000 bytes for `stall` seconds; /huge/NAME announces
an absurd Content-Length; /redirect/NAME sends 302 to /ok/NAME; /loop/NAME redirects to itself;
/statusNNN/NAME answers NNN. Every request is logged (path, Range header, status, body bytes).
What it is not: a general or fast server; it never touches the network beyond 127.0.0.1.
"""
import http.server
import re
import threading
import time


class RangeServer:
    def __init__(self, files, cut=0, stall=5.0):
        self.files = dict(files)
        self.cut = cut
        self.stall = stall
        self.log = []
        self.lock = threading.Lock()
        self.seen = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'

            def log_message(self, *a):
                pass

            def do_GET(self):
                server._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, mode, name):
        return 'http://127.0.0.1:%d/%s/%s' % (self.port, mode, name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self):
        with self.lock:
            return list(self.log)

    def clear(self):
        with self.lock:
            self.log.clear()
            self.seen.clear()

    # ------------------------------------------------------------------------------------

    def _record(self, h, status, sent):
        with self.lock:
            self.log.append({'path': h.path, 'range': h.headers.get('Range'), 'status': status,
                             'sent': sent})

    def _send(self, h, status, headers, body, limit=None):
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        data = body if limit is None else body[:limit]
        sent = 0
        try:
            h.wfile.write(data)
            h.wfile.flush()
            sent = len(data)
        except OSError:
            pass
        self._record(h, status, sent)
        if limit is not None:
            h.close_connection = True

    def _handle(self, h):
        m = re.match(r'^/([a-z0-9]+)/([^/?]+)$', h.path)
        if not m:
            self._send(h, 404, [('Content-Length', '0')], b'')
            return
        mode, name = m.groups()
        st = re.match(r'^status(\d{3})$', mode)
        if st:
            body = b'<html>error</html>\n'
            self._send(h, int(st.group(1)), [('Content-Length', str(len(body)))], body)
            return
        if mode == 'loop':
            self._send(h, 302, [('Location', h.path), ('Content-Length', '0')], b'')
            return
        if mode == 'redirect':
            self._send(h, 302, [('Location', '/ok/' + name), ('Content-Length', '0')], b'')
            return
        data = self.files.get(name)
        if data is None:
            self._send(h, 404, [('Content-Length', '0')], b'')
            return
        with self.lock:
            n_seen = self.seen.get(h.path, 0)
            self.seen[h.path] = n_seen + 1
        size = len(data)
        if mode == 'flip':
            b = bytearray(data)
            b[size // 2] ^= 0x40
            data = bytes(b)
        if mode == 'huge':
            self._send(h, 200, [('Content-Length', str(10 ** 15))], data, limit=65536)
            return
        rng = h.headers.get('Range')
        if mode == 'badrange' and rng:
            self._send(h, 206, [('Content-Length', str(size)),
                                ('Content-Range', 'bytes 0-%d/%d' % (size - 1, size))], data)
            return
        if rng and mode != 'norange':
            r = re.match(r'^bytes=(\d+)-(\d*)$', rng.strip())
            if r:
                start = int(r.group(1))
                end = int(r.group(2)) if r.group(2) else size - 1
                if start >= size:
                    self._send(h, 416, [('Content-Range', 'bytes */%d' % size),
                                        ('Content-Length', '0')], b'')
                    return
                end = min(end, size - 1)
                part = data[start:end + 1]
                self._send(h, 206, [('Content-Length', str(len(part))),
                                    ('Content-Range', 'bytes %d-%d/%d' % (start, end, size)),
                                    ('Accept-Ranges', 'bytes')], part)
                return
        headers = [('Content-Length', str(size)), ('Accept-Ranges', 'bytes')]
        if mode == 'cut' and n_seen == 0:
            self._send(h, 200, headers, data, limit=self.cut)
            return
        if mode == 'stall':
            h.send_response(200)
            for k, v in headers:
                h.send_header(k, v)
            h.end_headers()
            try:
                h.wfile.write(data[:2000])
                h.wfile.flush()
                time.sleep(self.stall)
            except OSError:
                pass
            self._record(h, 200, 2000)
            h.close_connection = True
            return
        self._send(h, 200, headers, data)
