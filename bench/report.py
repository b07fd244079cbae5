#!/usr/bin/env python3
"""Turns a bench/lb.sh CSV into a Markdown table with ratios and an SVG bar chart.

Usage: report.py RESULTS.csv CHART.svg   (standard library only)
"""
import csv
import sys


def main() -> None:
    src, svg_path = sys.argv[1], sys.argv[2]
    rows = list(csv.DictReader(open(src)))
    order = {"user-json": 0, "100KB": 1, "user-json-tls": 2}
    payloads = sorted({r["payload"] for r in rows}, key=lambda p: (order.get(p, 9), p))
    proxies = ["strata-lb", "nginx", "haproxy"]
    by = {(r["proxy"], r["payload"]): r for r in rows}
    cpu = "proxy_user_us" in rows[0] if rows else False
    extra = " proxy CPU µs/request (user + system) | backends + wrk µs/request |" if cpu else ""
    print("| payload | proxy | requests/s | vs nginx | vs HAProxy | p50 ms | p99 ms | p99.9 ms | errors |" + extra)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if cpu else ""))
    for pay in payloads:
        base_n = float(by.get(("nginx", pay), {}).get("rps") or 0)
        base_h = float(by.get(("haproxy", pay), {}).get("rps") or 0)
        for px in proxies:
            r = by.get((px, pay))
            if not r:
                continue
            rps = float(r["rps"] or 0)
            vn = f"{rps / base_n:.2f}×" if base_n else "-"
            vh = f"{rps / base_h:.2f}×" if base_h else "-"
            line = f"| {pay} | {px} | {rps:,.0f} | {vn} | {vh} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['errors']} |"
            if cpu:
                u, s = float(r["proxy_user_us"] or 0), float(r["proxy_sys_us"] or 0)
                rest = float(r["backend_us"] or 0) + float(r["wrk_us"] or 0)
                line += f" {u + s:.1f} ({u:.1f} + {s:.1f}) | {rest:.1f} |"
            print(line)
    # SVG: grouped bars of requests/s per payload.
    colors = {"strata-lb": "#2b7bb9", "nginx": "#3a9d23", "haproxy": "#d9822b"}
    width, height, pad = 720, 360, 50
    maxv = max([float(r["rps"] or 0) for r in rows] + [1])
    group_w = (width - 2 * pad) / max(len(payloads), 1)
    bar_w = group_w / (len(proxies) + 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<text x="{width/2}" y="20" text-anchor="middle" font-size="14">Requests/s through each proxy (higher is better)</text>',
             f'<line x1="{pad}" y1="{height-pad}" x2="{width-pad}" y2="{height-pad}" stroke="black"/>']
    for gi, pay in enumerate(payloads):
        for pi, px in enumerate(proxies):
            r = by.get((px, pay))
            if not r:
                continue
            v = float(r["rps"] or 0)
            h = (height - 2 * pad - 20) * v / maxv
            x = pad + gi * group_w + (pi + 0.5) * bar_w
            y = height - pad - h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w*0.9:.1f}" height="{h:.1f}" fill="{colors[px]}"/>')
            parts.append(f'<text x="{x + bar_w*0.45:.1f}" y="{y-4:.1f}" text-anchor="middle">{v:,.0f}</text>')
        parts.append(f'<text x="{pad + (gi + 0.5) * group_w:.1f}" y="{height-pad+18}" text-anchor="middle">{pay}</text>')
    for i, px in enumerate(proxies):
        parts.append(f'<rect x="{pad + i*130}" y="{height-18}" width="12" height="12" fill="{colors[px]}"/>'
                     f'<text x="{pad + i*130 + 16}" y="{height-8}">{px}</text>')
    parts.append("</svg>")
    open(svg_path, "w").write("\n".join(parts))
    if cpu:
        cpu_svg = svg_path[:-4] + "-cpu.svg" if svg_path.endswith(".svg") else svg_path + "-cpu.svg"
        open(cpu_svg, "w").write(cpu_chart(payloads, proxies, by))
        print(f"CPU per request: {cpu_svg}")


def cpu_chart(payloads, proxies, by) -> str:
    """Stacked bars: CPU microseconds per request — the proxy's user and system time, and the
    backends' and load generator's — per payload and proxy. On a shared machine, requests/s is
    about the cores divided by the height of a bar."""
    width, height, pad = 760, 380, 50
    segs = [("proxy user", "proxy_user_us", "#2b7bb9"), ("proxy system", "proxy_sys_us", "#9cc3e4"),
            ("backends", "backend_us", "#b0b0b0"), ("wrk", "wrk_us", "#dddddd")]
    def total(r):
        return sum(float(r[k] or 0) for _, k, _ in segs)
    rows = [by[(px, pay)] for pay in payloads for px in proxies if (px, pay) in by]
    maxv = max([total(r) for r in rows] + [1])
    group_w = (width - 2 * pad) / max(len(payloads), 1)
    bar_w = group_w / (len(proxies) + 1)
    scale = (height - 2 * pad - 30) / maxv
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<text x="{width/2}" y="20" text-anchor="middle" font-size="14">CPU µs per request: proxy user + system, backends, wrk (lower is better)</text>',
             f'<line x1="{pad}" y1="{height-pad}" x2="{width-pad}" y2="{height-pad}" stroke="black"/>']
    for gi, pay in enumerate(payloads):
        for pi, px in enumerate(proxies):
            r = by.get((px, pay))
            if not r:
                continue
            x = pad + gi * group_w + (pi + 0.5) * bar_w
            y = height - pad
            for _, key, color in segs:
                h = float(r[key] or 0) * scale
                y -= h
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w*0.9:.1f}" height="{h:.1f}" fill="{color}" stroke="white" stroke-width="0.5"/>')
            parts.append(f'<text x="{x + bar_w*0.45:.1f}" y="{y-4:.1f}" text-anchor="middle">{total(r):.0f}</text>')
            parts.append(f'<text x="{x + bar_w*0.45:.1f}" y="{height-pad+14}" text-anchor="middle" font-size="10">{px}</text>')
        parts.append(f'<text x="{pad + (gi + 0.5) * group_w:.1f}" y="{height-pad+30}" text-anchor="middle">{pay}</text>')
    for i, (label, _, color) in enumerate(segs):
        parts.append(f'<rect x="{pad + i*150}" y="{height-14}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{pad + i*150 + 16}" y="{height-4}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
