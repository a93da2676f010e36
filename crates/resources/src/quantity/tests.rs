use super::*;

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A quantity of exactly `digits * 10^exp`, built without the parser.
fn dec(value: i64, exp: i32, format: Format) -> Quantity {
    Quantity::from_scaled(value, exp, format)
}

#[test]
fn parses_to_exact_values() {
    use Format::*;
    let table: &[(&str, Quantity)] = &[
        ("0", dec(0, 0, DecimalSI)),
        ("0n", dec(0, 0, DecimalSI)),
        ("0Ki", dec(0, 0, BinarySI)),
        ("1", dec(1, 0, DecimalSI)),
        ("1Ki", dec(1024, 0, BinarySI)),
        ("8Ki", dec(8 * 1024, 0, BinarySI)),
        ("7Mi", dec(7 << 20, 0, BinarySI)),
        ("6Gi", dec(6 << 30, 0, BinarySI)),
        ("5Ti", dec(5 << 40, 0, BinarySI)),
        ("4Pi", dec(4 << 50, 0, BinarySI)),
        ("3Ei", dec(3 << 60, 0, BinarySI)),
        ("5n", dec(5, -9, DecimalSI)),
        ("4u", dec(4, -6, DecimalSI)),
        ("3m", dec(3, -3, DecimalSI)),
        ("50k", dec(5, 4, DecimalSI)),
        ("300T", dec(3, 14, DecimalSI)),
        ("1E", dec(1, 18, DecimalSI)),
        ("1E-3", dec(1, -3, DecimalExponent)),
        ("1e3", dec(1, 3, DecimalExponent)),
        ("1E18", dec(1, 18, DecimalExponent)),
        ("100.035k", dec(100035, 0, DecimalSI)),
        ("0.0005k", dec(5, -1, DecimalSI)),
        ("0.50000", dec(5, -1, DecimalSI)),
        ("0.5e-2", dec(5, -3, DecimalExponent)),
        ("1.3E+6", dec(13, 5, DecimalExponent)),
        ("1.7E18", dec(17, 17, DecimalExponent)),
        ("6.987654321G", dec(6987654321, 0, DecimalSI)),
        ("1.01E", dec(101, 16, DecimalSI)),
        // Sub-nano amounts round up.
        ("3.001n", dec(4, -9, DecimalSI)),
        ("1.1E-9", dec(2, -9, DecimalExponent)),
        ("0.0000000001", dec(1, -9, DecimalSI)),
        ("0.5e-9", dec(1, -9, DecimalExponent)),
        ("0.00000012345", dec(124, -9, DecimalSI)),
        // BinarySI is capped at the largest int64.
        ("9Ei", dec(i64::MAX, 0, BinarySI)),
        ("9223372036854775807Ki", dec(i64::MAX, 0, BinarySI)),
        ("12E", dec(12, 18, DecimalSI)),
        ("100.035Ki", dec(10243584, -2, BinarySI)),
        ("0.5Mi", dec(512 * 1024, 0, BinarySI)),
        ("0.025Ti", dec(274877906944, -1, BinarySI)),
        // Below one, BinarySI turns DecimalSI.
        ("0.000000000001Ki", dec(2, -9, DecimalSI)),
        (".001", dec(1, -3, DecimalSI)),
        ("1.", dec(1, 0, DecimalSI)),
        ("1.G", dec(1, 9, DecimalSI)),
        (".", dec(0, 0, DecimalSI)),
        ("Ki", dec(0, 0, BinarySI)),
    ];
    for (input, want) in table {
        let got = q(input);
        assert_eq!(&got, want, "{input}");
        assert_eq!(got.format(), want.format(), "{input}");
        let negative = q(&format!("-{input}"));
        let mut want_negative = want.clone();
        want_negative.neg();
        assert_eq!(negative, want_negative, "-{input}");
        assert_eq!(negative.format(), want.format(), "-{input}");
        assert_eq!(q(&format!("+{input}")), *want, "+{input}");
    }
}

#[test]
fn rejects_malformed_input() {
    let format_wrong = QuantityError::FormatWrong;
    for input in ["", " 1", "1 ", "1.1.M", "1+1.0M", "aoeu", "-3.01e-", "1Mi5"] {
        let err = Quantity::parse(input).unwrap_err();
        assert!(err == format_wrong || err == QuantityError::Suffix, "{input}: {err:?}");
    }
    assert_eq!(Quantity::parse("1.1.M"), Err(format_wrong));
    assert_eq!(
        Quantity::parse("").unwrap_err().to_string(),
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
    for input in ["0.1mi", "0.1am", ".5i", "1i", "-3.01i", "1e", "1KI", "1kb"] {
        assert!(Quantity::parse(input).is_err(), "{input}");
    }
    assert_eq!(Quantity::parse("1mi"), Err(QuantityError::Suffix));
    assert_eq!(Quantity::parse("1mi").unwrap_err().to_string(), "unable to parse quantity's suffix");
    // A number with no digits fails only where upstream leaves its fast path.
    assert_eq!(Quantity::parse(".e-20"), Err(QuantityError::Numeric));
    assert_eq!(Quantity::parse("e-20").unwrap_err().to_string(), "unable to parse numeric part of quantity");
}

#[test]
fn prints_canonical_form() {
    use Format::*;
    let table: &[(Quantity, &str)] = &[
        (dec(1 << 30, 0, BinarySI), "1Gi"),
        (dec(300 << 20, 0, BinarySI), "300Mi"),
        (dec(6 * 1024, 0, BinarySI), "6Ki"),
        (dec(1001 << 30, 0, BinarySI), "1001Gi"),
        (dec(1 << 40, 0, BinarySI), "1Ti"),
        (dec(5, 0, BinarySI), "5"),
        (dec(500, -3, BinarySI), "500m"),
        (dec(1, 9, DecimalSI), "1G"),
        (dec(1000, 6, DecimalSI), "1G"),
        (dec(1000000000, 0, DecimalSI), "1G"),
        (dec(1, -3, DecimalSI), "1m"),
        (dec(80, -3, DecimalSI), "80m"),
        (dec(1080, -3, DecimalSI), "1080m"),
        (dec(108, -2, DecimalSI), "1080m"),
        (dec(10800, -4, DecimalSI), "1080m"),
        (dec(1234567, 6, DecimalSI), "1234567M"),
        (dec(1234567, -3, BinarySI), "1234567m"),
        (dec(3, 3, DecimalSI), "3k"),
        (dec(1025, 0, BinarySI), "1025"),
        (dec(0, 0, DecimalSI), "0"),
        (dec(0, 0, BinarySI), "0"),
        (dec(1, 9, DecimalExponent), "1e9"),
        (dec(1, -3, DecimalExponent), "1e-3"),
        (dec(1, -9, DecimalExponent), "1e-9"),
        (dec(80, -3, DecimalExponent), "80e-3"),
        (dec(300, 6, DecimalExponent), "300e6"),
        (dec(3, 3, DecimalExponent), "3e3"),
        (dec(0, 0, DecimalExponent), "0"),
        (dec(1, -9, DecimalSI), "1n"),
        (dec(108, -8, DecimalSI), "1080n"),
        (dec(10800, -10, DecimalSI), "1080n"),
        (dec(1080, -6, DecimalSI), "1080u"),
    ];
    for (quantity, want) in table {
        assert_eq!(quantity.to_string(), *want, "{quantity:?}");
        // The canonical text reads back verbatim.
        let reparsed = q(want);
        assert_eq!(reparsed.to_string(), *want);
        assert_eq!(&reparsed, quantity);
        if !quantity.is_zero() {
            let mut negative = quantity.clone();
            negative.neg();
            assert_eq!(negative.to_string(), format!("-{want}"));
        }
    }
}

#[test]
fn reparses_alternate_spellings_to_canonical() {
    let table = [
        ("1024Mi", "1Gi"),
        ("307200Ki", "300Mi"),
        ("1025024Mi", "1001Gi"),
        ("5000m", "5"),
        ("0.5", "500m"),
        ("1000M", "1G"),
        ("0.001T", "1G"),
        ("1000u", "1m"),
        ("1.08", "1080m"),
        ("1080000000n", "1080m"),
        (".001e12", "1e9"),
        ("0.001e0", "1e-3"),
        ("1000e-12", "1e-9"),
        ("00", "0"),
        ("1000m", "1"),
        ("1.5Gi", "1536Mi"),
        ("1024Ki", "1Mi"),
        ("1.1", "1100m"),
        ("1.5", "1500m"),
        ("1e1", "10"),
        (".001Ki", "1024m"),
        (".000001Ki", "1024u"),
        (".000000001Ki", "1024n"),
        (".000000000001Ki", "2n"),
        ("0.0000000001", "1n"),
        ("0.0", "0"),
        ("2048", "2048"),
        ("2000", "2k"),
        ("1.5k", "1500"),
        ("9Ei", "9223372036854775807"),
    ];
    for (input, want) in table {
        assert_eq!(q(input).to_string(), want, "{input}");
        assert_eq!(q(&format!("-{input}")).to_string(), if want == "0" { "0".into() } else { format!("-{want}") });
    }
}

#[test]
fn keeps_text_upstream_keeps() {
    // Upstream reuses the input text when it needs no rewriting.
    for input in ["100m", "1Ki", "1e3", "129e6", "1", "10", "1100m", "+1", "01", "1.", "1.Ki", "-1Gi", "1.G", "7Mi"] {
        assert_eq!(q(input).to_string(), input);
    }
    assert_eq!(q("-0").to_string(), "0");
    assert_eq!(q("8Ki").to_string(), "8Ki");
    assert_eq!(q("16Mi").to_string(), "16Mi");
}

#[test]
fn accessors_round_away_from_zero() {
    assert_eq!(q("1").milli_value(), 1000);
    assert_eq!(q("100m").milli_value(), 100);
    assert_eq!(q("1.5").value(), 2);
    assert_eq!(q("-1.5").value(), -2);
    assert_eq!(q("1n").milli_value(), 1);
    assert_eq!(q("1n").value(), 1);
    assert_eq!(q("0").value(), 0);
    assert_eq!(q("1Gi").value(), 1 << 30);
    assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
    assert_eq!(q("100E").value(), i64::MAX);
    assert_eq!(q("-100E").value(), i64::MIN);
    assert_eq!(q("1e-3").milli_value(), 1);
    assert_eq!(q("2.5m").scaled_value(-6), 2500);
    assert!((q("1.5Gi").as_approximate_f64() - 1610612736.0).abs() < 1e-3);
    assert_eq!(q("-250m").as_approximate_f64(), -0.25);
}

#[test]
fn constructors_match_upstream() {
    use Format::*;
    assert_eq!(Quantity::from_milli(1).to_string(), "1m");
    assert_eq!(Quantity::from_milli(1000).to_string(), "1");
    assert_eq!(Quantity::from_milli(1234000).to_string(), "1234");
    assert_eq!(Quantity::from_scaled(1024, -3, BinarySI).to_string(), "1024m");
    assert_eq!(Quantity::from_scaled(1024 * 1024, -3, BinarySI).to_string(), "1048576m");
    assert_eq!(Quantity::new(1, DecimalSI).to_string(), "1");
    assert_eq!(Quantity::new(1000, DecimalSI).to_string(), "1k");
    assert_eq!(Quantity::new(1024, BinarySI).to_string(), "1Ki");
    assert_eq!(Quantity::new(1 << 20, BinarySI).to_string(), "1Mi");
    assert_eq!(Quantity::new(1000000, DecimalExponent).to_string(), "1e6");
    assert_eq!(Quantity::from_scaled(1000, -9, DecimalSI).to_string(), "1u");
    assert_eq!(Quantity::from_milli(i64::MIN).milli_value(), i64::MIN);
    assert_eq!(Quantity::default().to_string(), "0");
}

#[test]
fn compares_by_value() {
    assert_eq!(q("1"), q("1000m"));
    assert_eq!(q("1Ki"), q("1024"));
    assert!(q("100m") > q("50m"));
    assert!(q("10000T") > q("100Gi"));
    assert!(q("-1") < q("0"));
    assert!(q("-2") < q("-1"));
    assert!(q("1n") > q("0"));
    assert!(q("0.001") == q("1m"));
    let mut sorted = [q("1Gi"), q("-1"), q("500m"), q("1G"), q("0")];
    sorted.sort();
    let text: Vec<String> = sorted.iter().map(|x| x.to_string()).collect();
    assert_eq!(text, ["-1", "0", "500m", "1G", "1Gi"]);
    use std::collections::HashSet;
    let set: HashSet<Quantity> = [q("1"), q("1000m"), q("1e0")].into_iter().collect();
    assert_eq!(set.len(), 1);
}

#[test]
fn arithmetic() {
    let mut a = q("100m");
    a.add(&q("1.5"));
    assert_eq!(a.to_string(), "1600m");
    a.sub(&q("2"));
    assert_eq!(a.to_string(), "-400m");
    let mut zero = q("0");
    zero.add(&q("1Gi"));
    assert_eq!(zero.to_string(), "1Gi");
    let mut z2 = q("0");
    z2.sub(&q("100m"));
    assert_eq!(z2.to_string(), "-100m");
    let mut b = q("1Gi");
    b.add(&q("0"));
    assert_eq!(b.to_string(), "1Gi");
    let mut c = q("1Ki");
    c.sub(&q("1Ki"));
    assert_eq!((c.to_string(), c.sign()), ("0".into(), 0));
    let mut big = q("9Ei");
    big.add(&q("9Ei"));
    assert_eq!(big.to_string(), "18446744073709551614");
}

#[test]
fn rounds_to_a_scale() {
    let mut x = q("9.01");
    assert!(!x.round_up(-1));
    assert_eq!(x, q("9.1"));
    let mut y = q("-9.01");
    assert!(!y.round_up(0));
    assert_eq!(y, q("-10"));
    let mut z = q("100u");
    assert!(!z.round_up(-3));
    assert_eq!(z.to_string(), "1m");
    let mut kept = q("+1");
    assert!(kept.round_up(-3));
    assert_eq!(kept.to_string(), "+1");
}

#[test]
fn serde_round_trip() {
    let v: Quantity = serde_json::from_str("\" 1.5Gi \"").unwrap();
    assert_eq!(serde_json::to_string(&v).unwrap(), "\"1536Mi\"");
    let n: Quantity = serde_json::from_str("1").unwrap();
    assert_eq!(n.to_string(), "1");
    let f: Quantity = serde_json::from_str("0.5").unwrap();
    assert_eq!(f.to_string(), "500m");
    let neg: Quantity = serde_json::from_str("-1").unwrap();
    assert_eq!(neg.to_string(), "-1");
    assert!(serde_json::from_str::<Quantity>("\"abc\"").is_err());
    assert_eq!(Quantity::from_json(&serde_json::json!("250m")).unwrap().milli_value(), 250);
    assert_eq!(Quantity::from_json(&serde_json::json!(2)).unwrap().value(), 2);
    assert!(Quantity::from_json(&serde_json::json!(true)).is_err());
}

#[test]
fn huge_exponents_stay_cheap() {
    let big = q("1e2000000000");
    assert_eq!(big.value(), i64::MAX);
    let mut sum = big.clone();
    sum.add(&q("1"));
    assert_eq!(sum, big);
    assert_eq!(q("1e-2000000000").to_string(), "1e-9");
    assert_eq!(q("1e-2000000000"), q("1n"));
    assert_eq!(
        q("12345678901234567890123456789012345678901234567890").to_string(),
        "12345678901234567890123456789012345678901234567890"
    );
}
