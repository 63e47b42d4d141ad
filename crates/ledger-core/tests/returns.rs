//! Returns find their sale's lines by id, whether the sale has a few lines (scanned)
//! or many (indexed), and take back exactly what those lines counted.

use ledger_core::replay::Replay;

const PROGRAM: &str = r#"{"specversion":"1.0","id":"p1","source":"admin","type":"program.published","time":"2026-01-01T00:00:00Z","data":{"program_id":"REB-QTY","version":1,"name":"REB-QTY v1","kind":"rebate","currency":"USD","start_date":"2026-01-01","end_date":"2026-12-31","period":"month","requires_enrollment":false,"rules":{"basis":"quantity","mode":"incremental","tiers":[{"from":"0","rate":"1.00"}]}}}"#;

fn sale(id: &str, lines: usize) -> String {
    let lines: Vec<String> = (0..lines)
        .map(|i| {
            format!(r#"{{"line_id":"L-{i}","sku":"SKU-{i}","quantity":{},"net_amount":"10.00","currency":"USD"}}"#, i + 1)
        })
        .collect();
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"erp","type":"sale.recorded","time":"2026-03-05T10:00:00Z","data":{{"sale_id":"{id}","partner_id":"P-1","lines":[{}]}}}}"#,
        lines.join(",")
    )
}

fn ret(id: &str, sale: &str, lines: &[(&str, u64)]) -> String {
    let lines: Vec<String> = lines
        .iter()
        .map(|(l, q)| format!(r#"{{"line_id":"{l}","quantity":{q},"net_amount":"1.00"}}"#))
        .collect();
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"erp","type":"sale.returned","time":"2026-03-06T10:00:00Z","data":{{"return_id":"{id}","sale_id":"{sale}","partner_id":"P-1","lines":[{}]}}}}"#,
        lines.join(",")
    )
}

fn basis(replay: &Replay) -> String {
    let doc = replay.document();
    doc.balances
        .iter()
        .find(|b| b.partner_id == "P-1" && b.program_id == "REB-QTY")
        .map(|b| b.basis.clone())
        .unwrap_or_default()
}

#[test]
fn returns_find_lines_in_short_and_long_sales() {
    for lines in [3usize, 40] {
        let mut r = Replay::new();
        let mut n = 0;
        let mut push = |r: &mut Replay, line: &str| {
            n += 1;
            r.push(line.as_bytes(), n)
        };
        push(&mut r, PROGRAM);
        push(&mut r, &sale("S-1", lines));
        // Quantities 1..=lines sum to lines·(lines+1)/2.
        let sold = lines * (lines + 1) / 2;
        assert_eq!(basis(&r), sold.to_string(), "{lines} lines");
        let last = format!("L-{}", lines - 1);
        push(&mut r, &ret("R-1", "S-1", &[("L-0", 1), (&last, 2)]));
        assert_eq!(basis(&r), (sold - 3).to_string(), "{lines} lines");
        // An unknown line refuses the whole return; a line returned beyond what was sold too.
        push(&mut r, &ret("R-2", "S-1", &[("L-1", 1), ("L-nope", 1)]));
        push(&mut r, &ret("R-3", "S-1", &[("L-0", 1)]));
        assert_eq!(basis(&r), (sold - 3).to_string(), "{lines} lines");
        let codes: Vec<&str> = r.rejections().iter().map(|x| x.code.as_str()).collect();
        assert_eq!(
            codes,
            ["unknown_line", "return_exceeds_sale"],
            "{lines} lines"
        );
        // What is left of a line can still be returned.
        push(&mut r, &ret("R-4", "S-1", &[(&last, lines as u64 - 2)]));
        assert_eq!(
            basis(&r),
            (sold - 3 - (lines - 2)).to_string(),
            "{lines} lines"
        );
    }
}
