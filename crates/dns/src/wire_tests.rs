use super::*;

fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns.is_some() as u8];
    m.extend(wire_name(name));
    m.extend(qtype.to_be_bytes());
    m.extend(CLASS_IN.to_be_bytes());
    if let Some(size) = edns {
        m.extend([0, 0, 41]);
        m.extend(size.to_be_bytes());
        m.extend([0, 0, 0, 0, 0, 0]);
    }
    m
}

fn rcode(m: &[u8]) -> u8 {
    m[3] & 0xF
}

#[test]
fn parses_a_query_case_kept_and_lowered() {
    let Parsed::Query(q) = parse_query(&query("Web.Default.SVC.cluster.local", TYPE_A, Some(4096))) else { panic!() };
    assert_eq!(q.id, 0x1234);
    assert_eq!(q.name, "web.default.svc.cluster.local");
    assert_eq!(&q.qname_wire[1..4], b"Web");
    assert_eq!(q.edns, Some(Edns { udp_size: 4096, version: 0 }));
    assert_eq!(q.udp_limit(), MAX_UDP);
    assert!(q.rd());
    let Parsed::Query(q) = parse_query(&query("x", TYPE_A, None)) else { panic!() };
    assert_eq!(q.udp_limit(), 512);
}

#[test]
fn malformed_packets_never_panic() {
    let good = query("a.b.cluster.local", TYPE_SRV, Some(1232));
    // Every truncation and every single-byte corruption of a good query.
    for n in 0..good.len() {
        let _ = parse_query(&good[..n]);
    }
    for i in 0..good.len() {
        for v in [0u8, 1, 0x3F, 0x40, 0xC0, 0xFF] {
            let mut m = good.clone();
            m[i] = v;
            let _ = parse_query(&m);
            let _ = answer_records(&m);
        }
    }
    // Random garbage.
    for _ in 0..2000 {
        let len = rand::random::<usize>() % 80;
        let m: Vec<u8> = (0..len).map(|_| rand::random()).collect();
        let _ = parse_query(&m);
        let _ = answer_records(&m);
    }
    assert!(matches!(parse_query(&[1, 2, 3]), Parsed::Drop));
    // Answer and authority counts whose sum overflows a u16, an OPT record first.
    let mut m = query("a.cluster.local", TYPE_A, Some(1232));
    m[6..10].copy_from_slice(&[0x80, 0, 0x80, 0]);
    assert!(matches!(parse_query(&m), Parsed::Reply(r) if rcode(&r) == FORMERR));
}

#[test]
fn bad_queries_get_error_answers() {
    // Two questions: FORMERR.
    let mut m = query("a.b", TYPE_A, None);
    m[5] = 2;
    let Parsed::Reply(r) = parse_query(&m) else { panic!() };
    assert_eq!((r[0], r[1], rcode(&r)), (0x12, 0x34, FORMERR));
    assert!(r[2] & 0x80 != 0, "QR set");
    // A name running past the end.
    let mut m = query("abc", TYPE_A, None);
    m[12] = 40;
    let Parsed::Reply(r) = parse_query(&m) else { panic!() };
    assert_eq!(rcode(&r), FORMERR);
    // A compression pointer loop (pointing at itself).
    let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
    let Parsed::Reply(r) = parse_query(&m) else { panic!() };
    assert_eq!(rcode(&r), FORMERR);
    // Opcode STATUS: NOTIMP.
    m = query("a", TYPE_A, None);
    m[2] |= 2 << 3;
    let Parsed::Reply(r) = parse_query(&m) else { panic!() };
    assert_eq!(rcode(&r), NOTIMP);
    // A response is dropped.
    m = query("a", TYPE_A, None);
    m[2] |= 0x80;
    assert!(matches!(parse_query(&m), Parsed::Drop));
    // EDNS version 1: BADVERS in the OPT record.
    let mut m = query("a", TYPE_A, Some(1232));
    let n = m.len();
    m[n - 5] = 1;
    let Parsed::Reply(r) = parse_query(&m) else { panic!() };
    assert_eq!(r[r.len() - 11 + 5], 1, "extended rcode 16 >> 4");
}

#[test]
fn builds_compressed_answers() {
    let Parsed::Query(q) = parse_query(&query("web.default.svc.cluster.local", TYPE_SRV, None)) else { panic!() };
    let mut b = Builder::new(q.id, q.flags, NOERROR, &q.qname_wire, q.qtype, q.qclass);
    b.set_aa();
    let target = "web.default.svc.cluster.local".to_string();
    b.record(0, &Record { name: None, ttl: 5, data: Data::Srv { priority: 0, weight: 100, port: 80, target: target.clone() } });
    b.record(2, &Record { name: Some(target.clone()), ttl: 5, data: Data::A(Ipv4Addr::new(10, 43, 0, 20)) });
    b.record(1, &Record { name: Some("cluster.local".into()), ttl: 5, data: Data::Cname("other.cluster.local".into()) });
    let m = b.finish(512);
    assert_eq!(&m[6..12], &[0, 1, 0, 1, 0, 1]);
    assert!(m[2] & 0x04 != 0, "AA");
    // The additional record's owner is a pointer to the question name.
    let text = String::from_utf8_lossy(&m);
    assert_eq!(text.matches("default").count(), 2, "question + uncompressed SRV target only");
    let recs = answer_records(&m).unwrap();
    assert_eq!(recs.len(), 0, "SRV is not one of the copied types");
}

#[test]
fn truncates_at_record_boundaries_and_keeps_opt() {
    let Parsed::Query(q) = parse_query(&query("h.default.svc.cluster.local", TYPE_A, Some(512))) else { panic!() };
    let mut b = Builder::new(q.id, q.flags, NOERROR, &q.qname_wire, q.qtype, q.qclass);
    b.edns = Some(Edns { udp_size: 1232, version: 0 });
    for i in 0..100u8 {
        b.record(0, &Record { name: None, ttl: 5, data: Data::A(Ipv4Addr::new(10, 42, 0, i)) });
    }
    let m = b.finish(512);
    assert!(m.len() <= 512);
    assert!(m[2] & 0x02 != 0, "TC");
    let an = u16::from_be_bytes([m[6], m[7]]) as usize;
    let header_question = 12 + q.qname_wire.len() + 4;
    assert_eq!(an, (512 - 11 - header_question) / 16);
    assert_eq!(u16::from_be_bytes([m[10], m[11]]), 1, "OPT kept");
    assert_eq!(answer_records(&m).unwrap().len(), an);
}

#[test]
fn reads_upstream_answers_with_pointers() {
    // www.example.com CNAME web.example.com; web.example.com A 192.0.2.1
    let Parsed::Query(q) = parse_query(&query("www.example.com", TYPE_A, None)) else { panic!() };
    let mut b = Builder::new(q.id, q.flags, NOERROR, &q.qname_wire, q.qtype, q.qclass);
    b.record(0, &Record { name: None, ttl: 60, data: Data::Cname("web.example.com".into()) });
    b.record(0, &Record { name: Some("web.example.com".into()), ttl: 60, data: Data::A(Ipv4Addr::new(192, 0, 2, 1)) });
    let recs = answer_records(&b.finish(512)).unwrap();
    assert_eq!(recs[0], Record { name: Some("www.example.com".into()), ttl: 60, data: Data::Cname("web.example.com".into()) });
    assert_eq!(recs[1].data, Data::A(Ipv4Addr::new(192, 0, 2, 1)));
    let m = query_message(7, "web.example.com", TYPE_AAAA);
    let Parsed::Query(q) = parse_query(&m) else { panic!() };
    assert_eq!((q.id, q.name.as_str(), q.qtype, q.rd()), (7, "web.example.com", TYPE_AAAA, true));
}
