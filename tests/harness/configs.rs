//! Gateway files generated for benchmarks: the same shapes in the end-to-end push-latency
//! benchmark (`bench/`) and the reload-pipeline benchmark (`xds-server/benches/`).

/// A gateway file with one listener on `{port}` (the harness fills it in), one upstream
/// `u<i>` per endpoint and `routes` prefix routes `r<n>` (`/svc/<n>/`), spread over the
/// upstreams, each setting `x-rev: 0` on the request — except route `edit`, which sets
/// `x-rev: r<rev>`: rewriting the file with another `rev` changes exactly one route.
pub fn many_routes(endpoints: &[String], routes: usize, edit: usize, rev: usize) -> String {
    let mut y = String::from(
        "listeners:\n  - name: public\n    address: \"127.0.0.1:{port}\"\nupstreams:\n",
    );
    for (i, endpoint) in endpoints.iter().enumerate() {
        y.push_str(&format!("  u{i}: {{endpoints: [\"{endpoint}\"]}}\n"));
    }
    y.push_str("routes:\n");
    for r in 0..routes {
        let header = if r == edit {
            format!("r{rev}")
        } else {
            "0".to_owned()
        };
        y.push_str(&format!(
            "  - name: r{r}\n    match: {{path_prefix: /svc/{r}/}}\n    upstream: u{}\n    request_headers: {{set: {{x-rev: \"{header}\"}}}}\n",
            r % endpoints.len().max(1)
        ));
    }
    y
}
