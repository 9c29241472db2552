"""Tables of the registry for people: every version with its stage, loss and dev figures; the history."""
from __future__ import annotations

from rerank.model.registry import Registry


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def render_versions(registry: Registry, corpus: str, domain: str | None = None) -> str:
    rows = [r for r in registry.listing(corpus) if domain in (None, r["domain"])]
    if not rows:
        return f"no published version in {registry.root / corpus}" + (f" for {domain}" if domain else "")
    lines = ["| domain | version | stage | loss | model | dev SemER | dev ECE (top) | published |",
             "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    for r in rows:
        stage = f"**{r['stage']}**" if r["stage"] == "live" else r["stage"]
        lines.append(f"| {r['domain']} | {r['version']} | {stage} | {r['loss']} | {r['kind']} | {_f(r['dev_semer'])} | "
                     f"{_f(r['dev_ece_top'])} | {r['published_at']} |")
    no_live = sorted({r["domain"] for r in rows} - {r["domain"] for r in rows if r["stage"] == "live"})
    if no_live:
        lines.append(f"\nNo live version (served by the baseline): {', '.join(no_live)}")
    return "\n".join(lines)


def render_history(registry: Registry, corpus: str, domain: str | None = None) -> str:
    domains = [domain] if domain else registry.domains(corpus)
    lines = ["| time | release | domain | action | from | to | verdict | forced | report |",
             "| --- | ---: | --- | --- | --- | --- | --- | --- | --- |"]
    entries = sorted((h for d in domains for h in registry.history(corpus, d)), key=lambda h: (h["time"], h.get("ts", 0.0)))
    for h in entries:
        moved = f"{h['release']} ({h.get('release_size', 1)} moves)" if h.get("moved") and "release" in h else "-"
        lines.append(f"| {h['time']} | {moved} | {h['domain']} | {h['action']} | {h.get('from') or 'baseline'} | "
                     f"{h.get('to') or 'baseline'} | "
                     f"{h['verdict']} | {'yes' if h.get('forced') else 'no'} | {h.get('report') or '-'} |")
    return "\n".join(lines) if entries else "no decision recorded"
