"""Human-readable evaluation reports: rich tables (on stdout; on stderr beside --json), from the dicts
`dgm eval --json` prints."""

import math

from rich.table import Table

# A VAE's three estimators, a flow's two, a diffusion model's bound; the table lists them in the order the report holds them.
LIKELIHOODS = ("elbo", "importance_weighted", "prior_monte_carlo", "dequantized", "variational_bound")


def spread(value: float | None, digits: int) -> str:
    """A standard error, or "-" where there is none (a single image)."""
    return "-" if value is None else f"{value:.{digits}f}"


def title(report: dict, what: str, count: int) -> str:
    return f"{report['model']}: {what}, {report['dataset']} {report['split']} ({count:,} images)"


def print_likelihood(console, report: dict) -> None:
    section = report["likelihood"]
    conditional = section.get("conditional", False)  # a conditional model, scored at each image's own label
    table = Table(
        title=title(
            report, "log-likelihood at the images' labels" if conditional else "log-likelihood", section["images"]
        )
    )
    for column in (
        "estimator",
        "log p(x|y) [nats]" if conditional else "log p(x) [nats]",
        "± s.e.",
        "bits/dim",
        "± s.e.",
        "mean ESS",
    ):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for name in (name for name in section if name in LIKELIHOODS):
        summary = section[name]
        ess = "" if summary["mean_ess"] is None else f"{summary['mean_ess']:.1f} of {summary['samples']}"
        table.add_row(
            summary["label"],
            f"{summary['nats']:.2f}",
            spread(summary["standard_error"], 2),
            f"{summary['bits_per_dim']:.4f}",
            spread(summary["bits_per_dim_standard_error"], 4),
            ess,
        )
    console.print(table)
    weighted = section.get("importance_weighted")
    if "elbo" in section:
        gap = weighted["nats"] - section["elbo"]["nats"]
        console.print(f"importance-weighted minus ELBO: {gap:+.2f} nats (never negative: Jensen's inequality)")
    if "dequantized" in section and weighted is not None:
        gap = weighted["nats"] - section["dequantized"]["nats"]
        console.print(f"importance-weighted minus dequantized: {gap:+.2f} nats (never negative: Jensen's inequality)")
    if "published" in report:
        print_published(console, report["published"])
    if "prior_monte_carlo" in section:
        prior = section["prior_monte_carlo"]
        console.print(
            f"prior Monte-Carlo minus importance-weighted: {prior['nats'] - weighted['nats']:+.2f} nats; "
            f"the prior's draws carry a mean ESS of {prior['mean_ess']:.1f} of {prior['samples']}, "
            f"the posterior's {weighted['mean_ess']:.1f} of {weighted['samples']}"
        )


def published_digits(metric: str) -> int:
    """Decimals to print a preset's number with: bits/dim are published to three (1.078), nats to two."""
    return 3 if "bits/dim" in metric else 2


def print_published(console, published: dict) -> None:
    """The preset's published number beside dgm's, with a warning when the protocols differ."""
    digits = published_digits(published["metric"])
    line = f"preset {published['preset']}: published {published['published']:.{digits}f}"
    if published["dgm"] is not None:
        line += f", dgm {published['dgm']:.{digits}f} ± {spread(published['dgm_standard_error'], digits)}"
    line += f" ({published['metric']}; {published['reference']})"
    if published["differences"]:
        line += f"; not comparable: {', '.join(published['differences'])}"
    console.print(line, markup=False, soft_wrap=True)


def print_sample_quality(console, report: dict) -> None:
    section = report["sample_quality"]
    model, floor = section["model"], section["real_floor"]
    table = Table(
        title=f"{report['model']}: sample quality, {section['samples']:,} samples against "
        f"{section['reference_images']:,} {report['dataset']} {report['split']} images"
    )
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"real floor ({floor['images']:,} {section['floor_split']} images)", justify="right")
    table.add_column("better")
    classes = len(model["histogram"])  # the feature network's classes
    rows = [
        ("FID", "fid", "{:.3f}", "lower"),
        ("KID", "kid", "{:.5f}", "lower"),
        ("precision (k=3)", "precision", "{:.3f}", "higher"),
        ("recall (k=3)", "recall", "{:.3f}", "higher"),
        (f"Inception Score (max {classes})", "inception_score", "{:.3f}", "higher"),
        (f"class entropy, bits (max {math.log2(classes):.2f})", "entropy_bits", "{:.3f}", "higher"),
        ("classes with >= 5% of images", "classes_at_5_percent", "{}", str(classes)),
    ]
    for label, key, style, better in rows:
        cells = [number(images[key], style) for images in (model, floor)]
        if key == "kid":  # the spread over KID's random subsets, as the JSON has it
            cells = [f"{cell} ± {number(images['kid_std'], '{:.5f}')}" for cell, images in zip(cells, (model, floor))]
        table.add_row(label, *cells, better)
    console.print(table)
    histogram = "  ".join(f"{digit}:{count}" for digit, count in enumerate(model["histogram"]))
    console.print(f"classes of the samples (classifier's argmax): {histogram}", markup=False)


def print_classification(console, report: dict) -> None:
    section = report["classification"]
    console.print(
        f"{title(report, 'classification', section['images'])}: accuracy {section['accuracy']:.4%}, "
        f"loss {section['loss']:.4f}",
        markup=False,
    )
    console.print(f"per-class accuracy: {per_class_line(section['per_class_accuracy'])}", markup=False)


def print_class_mixture(console, report: dict) -> None:
    """A conditional model's likelihoods under every class: log p(x|y), the mixture log p(x), the generative classifier."""
    section = report["class_mixture"]
    table = Table(title=title(report, "class-conditional likelihoods", section["images"]))
    for column in ("estimate", "nats", "± s.e.", "bits/dim", "± s.e."):
        table.add_column(column, justify="left" if column == "estimate" else "right")
    for key in ("conditional", "mixture"):
        summary = section[key]
        table.add_row(
            summary["label"],
            f"{summary['nats']:.2f}",
            spread(summary["standard_error"], 2),
            f"{summary['bits_per_dim']:.4f}",
            spread(summary["bits_per_dim_standard_error"], 4),
        )
    console.print(table)
    generative = section["generative_classifier"]
    console.print(
        f"generative classifier argmax_y p(x|y) p(y): accuracy {generative['accuracy']:.2%}; per class: "
        f"{per_class_line(generative['per_class_accuracy'])}",
        markup=False,
        soft_wrap=True,
    )


def number(value, style: str) -> str:
    """A metric as `style` formats it; "-" where it could not be computed (too few images)."""
    return "-" if value is None else style.format(value)


def per_class_line(values: list[float | None]) -> str:
    return "  ".join(f"{digit}:{'-' if value is None else f'{value:.3f}'}" for digit, value in enumerate(values))


def print_conditional_quality(console, report: dict) -> None:
    section = report["conditional_quality"]
    console.print(
        f"conditional accuracy (the classifier reads a sample drawn for y as y): {section['accuracy']:.2%}; "
        f"the classifier on real {report['split']} images: {section['real_accuracy']:.2%}",
        markup=False,
        soft_wrap=True,
    )
    table = Table(title=f"{report['model']}: per class, model (real floor)")
    for column in ("class", "conditional accuracy", "real accuracy", "FID", "KID", "precision", "recall"):
        table.add_column(column, justify="right")
    for row, accuracy, real in zip(
        section["per_class_quality"], section["per_class_accuracy"], section["real_per_class_accuracy"]
    ):
        model, floor = row["model"], row["real_floor"]
        cells = [
            f"{number(model[key], style)} ({number(floor[key], style)})"
            for key, style in (("fid", "{:.2f}"), ("kid", "{:.4f}"), ("precision", "{:.3f}"), ("recall", "{:.3f}"))
        ]
        table.add_row(str(row["label"]), f"{accuracy:.3f}", "-" if real is None else f"{real:.3f}", *cells)
    console.print(table)


def print_report(console, report: dict) -> None:
    """Every section an evaluation report holds, in the order dgm eval computes them."""
    sections = (
        ("classification", print_classification),
        ("likelihood", print_likelihood),
        ("class_mixture", print_class_mixture),
        ("sample_quality", print_sample_quality),
        ("conditional_quality", print_conditional_quality),
    )
    for key, show in sections:
        if report.get(key) is not None:
            show(console, report)
    budget = report.get("budget")
    if budget is not None and not budget.get("full_protocol"):  # the numbers above rest on fewer images or samples
        from dgm_cli.evaluation_budget import minutes_text

        console.print(
            f"a {budget['minutes']:g}-minute evaluation; the full protocol (every {report['split']} image, 10,000 "
            f"samples) takes about {minutes_text(budget['full_protocol_seconds'])} here: run the same command "
            "with --full",
            markup=False,
            soft_wrap=True,
        )
