"""The webhook address rules, one address at a time (no resolver involved), and the decision failed goods get."""

from __future__ import annotations

import pytest

from fraud_service.feedback.webhooks import address_problem


@pytest.mark.parametrize("address, allow_private, refused", [
    ("93.184.216.34", False, None),
    ("2606:2800:220:1:248:1893:25c8:1946", False, None),
    ("169.254.169.254", True, "metadata"),
    ("fd00:ec2::254", True, "metadata"),
    ("100.100.100.200", True, "metadata"),
    ("fe80::1", True, "link-local"),
    ("::ffff:169.254.169.254", True, "metadata"),
    ("2002:a9fe:a9fe::1", True, "metadata"),  # 6to4 carrying the metadata address
    ("2001:0:4136:e378:8000:63bf:56fe:fefe", True, None),  # Teredo: its client is 169.1.1.1 (inverted), public
    ("127.0.0.1", False, "FRAUD_WEBHOOK_ALLOW_PRIVATE"),
    ("127.0.0.1", True, None),
    ("::1", False, "FRAUD_WEBHOOK_ALLOW_PRIVATE"),
    ("::1", True, None),  # loopback is loopback, in IPv6 too
    ("10.1.2.3", True, None),
    ("192.168.1.1", False, "private"),
    ("100.64.0.1", True, "not a public address"),  # carrier-grade NAT is nobody's receiver
    ("fec0::1", True, "not a public address"),
    ("64:ff9b::a9fe:a9fe", True, "metadata"),  # NAT64 of the metadata address
    ("64:ff9b:1::7f00:1", False, "FRAUD_WEBHOOK_ALLOW_PRIVATE"),  # local-use NAT64 of loopback
    ("::a9fe:a9fe", True, "metadata"),  # IPv4-compatible
    ("::ffff:0:a00:1", False, "FRAUD_WEBHOOK_ALLOW_PRIVATE"),  # IPv4-translated 10.0.0.1
    ("64:ff9b::808:808", False, None),  # NAT64 of a public address
    ("64:ff9b:1:a9fe:a9:fe00:808:808", True, "metadata"),  # a local-use /48 NAT64 prefix carrying 169.254.169.254
    ("64:ff9b:1:aba9:fe:a9fe:0:808", True, "metadata"),  # a /56 prefix (64:ff9b:1:ab00::/56) carrying it
    ("64:ff9b:1:abcd:a9:fea9:fe00:8", True, "metadata"),  # a /64 prefix (64:ff9b:1:abcd::/64) carrying it
    ("64:ff9b:1:a08:8:800::", True, None),  # a /48 prefix carrying 10.8.8.8, allowed: not "0.0.0.0 is not unicast"
    ("64:ff9b:1:a9fe:a9:fe00::", True, "metadata"),  # and 169.254.169.254 so, refused for what it is
    ("64:ff9b:1::808:808", False, "FRAUD_WEBHOOK_ALLOW_PRIVATE"),  # local-use NAT64 is a network's own
    ("192.0.0.8", True, "not a public address"),  # IETF protocol assignments (Python 3.11 calls it global)
    ("3fff::1", True, "not a public address"),  # IPv6 documentation, RFC 9637
    ("5f00::1", True, "not a public address"),  # SRv6 segment ids, RFC 9602
    ("0.0.0.0", True, "not a unicast"),
    ("224.0.0.1", True, "not a unicast"),
])
def test_only_public_unicast_addresses_and_private_ones_when_allowed(address: str, allow_private: bool,
                                                                     refused: str | None) -> None:
    problem = address_problem(address, allow_private)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def test_a_host_whose_lookup_hangs_delays_no_other_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups ran on one pool of four threads: a receiver whose DNS hung filled it, and every other host, even one
    written as an address, went unresolved. The hanging resolver here is a stand-in for the system's (no DNS server
    runs in the tests); every other name goes to the real one."""
    import socket
    import threading

    from fraud_service.errors import RequestInvalid
    from fraud_service.feedback import webhooks

    real, release, hung = socket.getaddrinfo, threading.Event(), []

    def resolver(host: str, *args: object, **kwargs: object) -> object:
        if host.endswith(".slow.example"):
            hung.append(host)
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    try:
        for _ in range(3):  # one host, tried again and again: one lookup in flight, not one per attempt
            for name in ("a", "b", "c", "d", "e"):
                with pytest.raises(RequestInvalid, match="could not be resolved within 0.05 s"):
                    webhooks.resolve(f"http://{name}.slow.example/hook", allow_private=False, lookup_s=0.05)
        assert sorted(hung) == [f"{n}.slow.example" for n in "abcde"]
        assert webhooks.resolve("http://127.0.0.1:8793/x", allow_private=True, lookup_s=0.05).addresses == (
            "127.0.0.1",)
        assert "127.0.0.1" in webhooks.resolve("http://localhost:8793/x", allow_private=True, lookup_s=5).addresses
    finally:
        release.set()
