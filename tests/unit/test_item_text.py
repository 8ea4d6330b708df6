from learn_core.events import ItemCreated
from learn_core.item_text import render_fields, render_item, text_hash


def test_template_is_fixed_and_ordered() -> None:
    item = ItemCreated(
        item_id="1",
        title="  Trail   runner ",
        category="Shoes",
        brand="Acme",
        price=59.5,
        keywords=["trail", " ", "running"],
        attributes={"size": "42", "color": "red"},
        description="Light\nshoe.",
    )
    assert render_item(item) == (
        "Title: Trail runner\nCategory: Shoes\nBrand: Acme\nPrice: 59.50\n"
        "Keywords: trail, running\nAttributes: color: red; size: 42\nDescription: Light shoe."
    )


def test_missing_fields_are_omitted_and_hash_is_stable() -> None:
    assert render_fields("Toy Story") == "Title: Toy Story"
    # Pinned (sha256 of the UTF-8 text): a changed key would orphan every cached vector.
    assert text_hash("a") == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    assert text_hash("é") == "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c"
    assert text_hash("a") != text_hash("a ") != text_hash("b")
    assert render_fields("T", price=0.0) == "Title: T\nPrice: 0.00"
