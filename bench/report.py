#!/usr/bin/env python3
"""Turns a bench/lb.sh or bench/edge.sh CSV into a Markdown table with ratios and an SVG bar
chart. The first proxy of the file is Strata's; the others are the anchors it is compared with.

Usage: report.py RESULTS.csv CHART.svg   (standard library only)
"""
import csv
import sys


def main() -> None:
    src, svg_path = sys.argv[1], sys.argv[2]
    rows = list(csv.DictReader(open(src)))
    order = {"user-json": 0, "2KB": 0, "100KB": 1, "user-json-tls": 2, "2KB-tls": 2}
    payloads = sorted({r["payload"] for r in rows}, key=lambda p: (order.get(p, 9), p))
    proxies = list(dict.fromkeys(r["proxy"] for r in rows))
    anchors = proxies[1:]
    by = {(r["proxy"], r["payload"]): r for r in rows}
    cpu = "proxy_user_us" in rows[0] if rows else False
    extra = " proxy CPU µs/request (user + system) | backends + wrk µs/request |" if cpu else ""
    print("| payload | proxy | requests/s | " + " | ".join(f"vs {a}" for a in anchors)
          + " | p50 ms | p99 ms | p99.9 ms | errors |" + extra)
    print("|---|---|---:|" + "---:|" * len(anchors) + "---:|---:|---:|---:|" + ("---:|---:|" if cpu else ""))
    for pay in payloads:
        bases = [float(by.get((a, pay), {}).get("rps") or 0) for a in anchors]
        for px in proxies:
            r = by.get((px, pay))
            if not r:
                continue
            rps = float(r["rps"] or 0)
            vs = " | ".join(f"{rps / b:.2f}×" if b else "-" for b in bases)
            line = f"| {pay} | {px} | {rps:,.0f} | {vs} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['errors']} |"
            if cpu:
                u, s = float(r["proxy_user_us"] or 0), float(r["proxy_sys_us"] or 0)
                rest = float(r["backend_us"] or 0) + float(r["wrk_us"] or 0)
                line += f" {u + s:.1f} ({u:.1f} + {s:.1f}) | {rest:.1f} |"
            print(line)
    palette = ["#2b7bb9", "#3a9d23", "#d9822b", "#8e44ad"]
    colors = {px: palette[i % len(palette)] for i, px in enumerate(proxies)}
    open(svg_path, "w").write(bar_chart(
        "Requests/s through each proxy (higher is better)", payloads, proxies, by,
        stack=lambda px, r: [(float(r["rps"] or 0), colors[px])],
        label="{:,.0f}", legend=[(px, colors[px]) for px in proxies], size=(720, 360)))
    if cpu:
        segs = [("proxy user", "proxy_user_us", "#2b7bb9"), ("proxy system", "proxy_sys_us", "#9cc3e4"),
                ("backends", "backend_us", "#b0b0b0"), ("wrk", "wrk_us", "#dddddd")]
        cpu_svg = svg_path[:-4] + "-cpu.svg" if svg_path.endswith(".svg") else svg_path + "-cpu.svg"
        # On a shared machine, requests/s is about the cores divided by the height of a bar.
        open(cpu_svg, "w").write(bar_chart(
            "CPU µs per request: proxy user + system, backends, wrk (lower is better)",
            payloads, proxies, by,
            stack=lambda px, r: [(float(r[key] or 0), color) for _, key, color in segs],
            label="{:.0f}", legend=[(name, color) for name, _, color in segs], size=(760, 380),
            name_bars=True))
        print(f"CPU per request: {cpu_svg}")


def bar_chart(title, payloads, proxies, by, stack, label, legend, size, name_bars=False) -> str:
    """Grouped bars, one group per payload and one bar per proxy; each bar is the stack of
    (value, colour) segments `stack(proxy, row)` gives, labelled with its total."""
    width, height = size
    pad = 50
    totals = [sum(v for v, _ in stack(px, by[(px, pay)]))
              for pay in payloads for px in proxies if (px, pay) in by]
    maxv = max(totals + [1])
    group_w = (width - 2 * pad) / max(len(payloads), 1)
    bar_w = group_w / (len(proxies) + 1)
    scale = (height - 2 * pad - (30 if name_bars else 20)) / maxv
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<text x="{width/2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{pad}" y1="{height-pad}" x2="{width-pad}" y2="{height-pad}" stroke="black"/>']
    for gi, pay in enumerate(payloads):
        for pi, px in enumerate(proxies):
            r = by.get((px, pay))
            if not r:
                continue
            x = pad + gi * group_w + (pi + 0.5) * bar_w
            y = height - pad
            total = 0.0
            for v, color in stack(px, r):
                h = v * scale
                y -= h
                total += v
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w*0.9:.1f}" height="{h:.1f}" fill="{color}" stroke="white" stroke-width="0.5"/>')
            parts.append(f'<text x="{x + bar_w*0.45:.1f}" y="{y-4:.1f}" text-anchor="middle">{label.format(total)}</text>')
            if name_bars:
                parts.append(f'<text x="{x + bar_w*0.45:.1f}" y="{height-pad+14}" text-anchor="middle" font-size="10">{px}</text>')
        parts.append(f'<text x="{pad + (gi + 0.5) * group_w:.1f}" y="{height-pad+(30 if name_bars else 18)}" text-anchor="middle">{pay}</text>')
    step = 150 if name_bars else 130
    for i, (name, color) in enumerate(legend):
        parts.append(f'<rect x="{pad + i*step}" y="{height-16}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{pad + i*step + 16}" y="{height-6}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
