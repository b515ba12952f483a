"""The capture rule batch: what it redirects, what it exempts, and that it is idempotent."""
from reference_impl.ztunnel import capture


def test_batch_recreates_one_table_atomically():
    text = capture.rules_text()
    lines = text.splitlines()
    # declare-then-delete makes the batch work whether or not the table exists
    assert lines[0] == "table inet ztunnel" and lines[1] == "delete table inet ztunnel"
    assert text.count("table inet ztunnel {") == 1


def test_outbound_redirects_unmarked_tcp_to_15001_and_exempts_loopback():
    text = capture.rules_text()
    outbound = text.split("chain outbound {", 1)[1].split("}", 1)[0]
    assert "meta mark 0x539 return" in outbound
    assert 'oifname "lo" return' in outbound
    assert outbound.strip().splitlines()[-1].strip() == "meta l4proto tcp redirect to :15001"


def test_inbound_redirects_to_15006_except_hbone():
    text = capture.rules_text(capture.CaptureConfig(interface="eth7"))
    inbound = text.split("chain inbound {", 1)[1].split("}", 1)[0]
    assert 'iifname != "eth7" return' in inbound
    assert inbound.index("tcp dport 15008 return") < inbound.index("redirect to :15006")


def test_pod_may_not_call_its_own_proxy_ports():
    guard = capture.rules_text().split("chain guard {", 1)[1]
    assert "priority -200" in guard  # before NAT rewrites the port
    assert "{ 15001, 15006, 15008, 15080 } reject with tcp reset" in guard


def test_custom_mark_is_used_everywhere():
    text = capture.rules_text(capture.CaptureConfig(mark=0x1234))
    assert text.count("meta mark 0x1234 return") == 2 and "0x539" not in text
    assert "meta mark and 0xfff == 0x1234 ct mark set" in text


def test_removal_tolerates_a_missing_table():
    assert capture.removal_text() == "table inet ztunnel\ndelete table inet ztunnel\n"


def test_proxy_connections_get_the_connmark_and_replies_get_it_back():
    text = capture.rules_text()
    pre = text.split("chain mark_proxy_connections {", 1)[1].split("}", 1)[0]
    assert "hook prerouting" in pre
    assert "meta mark and 0xfff == 0x539 ct mark set ct mark and 0xfffff000 or 0x111" in pre
    restore = text.split("chain restore_mark {", 1)[1].split("}", 1)[0]
    # only a route chain re-routes a packet whose mark changed
    assert "type route hook output" in restore
    assert "ct mark and 0xfff == 0x111 meta mark set ct mark" in restore


def test_reply_routing_matches_istio_cni_and_is_removed_with_capture():
    assert capture.routing_add_text() == ("rule add fwmark 0x111/0xfff pref 32764 lookup 100\n"
                                          "route replace local 0.0.0.0/0 dev lo table 100\n")
    assert capture.routing_del_text() == ("rule del fwmark 0x111/0xfff pref 32764 lookup 100\n"
                                          "route del local 0.0.0.0/0 dev lo table 100\n")
    install = [s.batch for s in capture._install_steps(capture.CaptureConfig())]
    remove = [s.batch for s in capture._remove_steps()]
    # routing is in place before capture starts and gone after it stops
    assert install.index(capture.routing_add_text()) < install.index(capture.rules_text())
    assert remove == [capture.removal_text(), capture.routing_del_text()]
