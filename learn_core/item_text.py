"""The fixed template that turns an item into the text the content model reads.

The template is part of the model version: changing it changes every content
embedding, so it is versioned (``TEMPLATE_VERSION``) and recorded in manifests.

Template (one line per present field, in this order, missing fields omitted)::

    Title: {title}
    Category: {category}
    Brand: {brand}
    Price: {price:.2f}
    Keywords: {kw1}, {kw2}, ...
    Attributes: {key1}: {value1}; {key2}: {value2}; ...   (keys sorted)
    Description: {description}

Whitespace inside each field is collapsed to single spaces so that formatting
noise in producers does not change the embedding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from learn_core.events import ItemCreated

TEMPLATE_VERSION = "item-text-v1"


def _clean(s: str) -> str:
    return " ".join(s.split())


def render_fields(
    title: str,
    category: str | None = None,
    brand: str | None = None,
    price: float | None = None,
    keywords: Sequence[str] = (),
    attributes: Mapping[str, str] | None = None,
    description: str | None = None,
) -> str:
    """Render item fields with the template; the single source of item text."""
    lines = [f"Title: {_clean(title)}"]
    if category:
        lines.append(f"Category: {_clean(category)}")
    if brand:
        lines.append(f"Brand: {_clean(brand)}")
    if price is not None:
        lines.append(f"Price: {price:.2f}")
    kws = [_clean(k) for k in keywords if k and k.strip()]
    if kws:
        lines.append("Keywords: " + ", ".join(kws))
    if attributes:
        attrs = [f"{_clean(k)}: {_clean(v)}" for k, v in sorted(attributes.items()) if v]
        if attrs:
            lines.append("Attributes: " + "; ".join(attrs))
    if description:
        lines.append(f"Description: {_clean(description)}")
    return "\n".join(lines)


def render_item(item: ItemCreated) -> str:
    return render_fields(
        item.title,
        item.category,
        item.brand,
        item.price,
        item.keywords,
        item.attributes,
        item.description,
    )


def text_hash(text: str) -> str:
    """Stable key for the embedding cache (sha256 of the UTF-8 text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
