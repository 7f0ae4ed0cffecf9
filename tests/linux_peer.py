"""The Linux-side bulk peer both TAP interop suites run inside their namespace (python3 -c PEER ...).

It sends a seeded stream, reads to EOF and prints one JSON line: sha256 both ways, how its read ended,
its 4-tuple and a few TCP_INFO fields. argv: role host port nbytes seed chunk timeout_s; a server
prints "ready" first. Every blocking call is under the socket timeout; the caller kills it at its deadline.
"""

PEER = r"""
import hashlib, json, random, socket, struct, sys, threading
role, host, port, nbytes, seed, chunk, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
if role == "server":
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port)); ls.listen(1); ls.settimeout(timeout)
    print("ready", flush=True)
    c, _ = ls.accept(); ls.close()
else:
    c = socket.create_connection((host, port), timeout=timeout)
c.settimeout(timeout)
out = {"sent": 0, "send_error": None, "local": list(c.getsockname()), "peer": list(c.getpeername())}
def send():
    h = hashlib.sha256(); rng = random.Random(seed); left = nbytes
    try:
        while left > 0:
            k = chunk if left > chunk else left
            b = rng.randbytes(k); h.update(b); c.sendall(b); left -= k; out["sent"] += k
        c.shutdown(socket.SHUT_WR)
    except OSError as e:
        out["send_error"] = repr(e)
    out["sent_sha256"] = h.hexdigest()
t = threading.Thread(target=send); t.start()
h = hashlib.sha256(); n = 0; end = "eof"
try:
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        h.update(d); n += len(d)
except ConnectionResetError:
    end = "reset"
except socket.timeout:
    end = "timeout"
except OSError as e:
    end = repr(e)
t.join(timeout)
info = c.getsockopt(socket.IPPROTO_TCP, 11, 104)
c.close()
# struct tcp_info: tcpi_retransmits u8 @2, tcpi_options u8 @5, wscales u8 @6, tcpi_snd_mss u32 @16,
# tcpi_total_retrans u32 @100.
out.update(received=n, received_sha256=h.hexdigest(), end=end, options=info[5], retransmits_now=info[2],
           snd_wscale=info[6] & 15, rcv_wscale=info[6] >> 4, snd_mss=struct.unpack_from("I", info, 16)[0],
           total_retrans=struct.unpack_from("I", info, 100)[0])
print(json.dumps(out), flush=True)
"""
