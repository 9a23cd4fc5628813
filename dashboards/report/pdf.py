"""The reports' document: an A4 PDF made with fpdf2, its text real text (searchable, and read back
by ``pdftotext``), its pictures PNG.

The font is DejaVu Sans as matplotlib ships it (``mpl-data/fonts/ttf``): Unicode text (≥, °,
names with accents) with nothing to install beside the Python packages, embedded as a subset.
Every :class:`Document` is its own ``FPDF`` object: reports can be made in several threads.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from fpdf import FPDF, FontFace

__all__ = ["FONT", "Document"]

FONT: Final = "DejaVu"
"""The document's font family."""
_FONT_FILES: Final = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
_HEADING_PT: Final = {1: 15.0, 2: 12.0, 3: 10.0}
_BODY_PT: Final = 9.0
_TABLE_PT: Final = 6.5
_HEADINGS: Final = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))


class _Pdf(FPDF):
    """FPDF with the report's footer: its title and the page number."""

    def __init__(self, footer: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = footer

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, "", 7)
        self.set_text_color(110)
        self.cell(0, 5, f"{self.footer_text} · page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0)


class Document:
    """A report being written, top to bottom.

    Args:
        title: The document's title (its metadata and the footer of every page).
        author: Its author in the metadata.
    """

    def __init__(self, title: str, author: str = "boltwatch") -> None:
        pdf = _Pdf(title)
        import matplotlib as mpl  # its fonts only; matplotlib loads when a report is made

        fonts = Path(mpl.get_data_path()) / "fonts" / "ttf"
        for style, name in _FONT_FILES.items():
            pdf.add_font(FONT, style, str(fonts / name))
        pdf.set_title(title)
        pdf.set_author(author)
        pdf.set_creator("boltwatch")
        pdf.set_margins(15, 15, 15)
        pdf.set_auto_page_break(auto=True, margin=16)
        pdf.add_page()
        pdf.set_font(FONT, "", _BODY_PT)
        self.pdf = pdf

    @property
    def width_mm(self) -> float:
        """Width between the margins."""
        return float(self.pdf.epw)

    def heading(self, text: str, level: int = 1) -> None:
        """A heading; a level-1 or level-2 heading that would sit at the foot of a page starts
        the next one."""
        pdf = self.pdf
        if level <= 2 and pdf.y > pdf.h - 60:
            pdf.add_page()
        pdf.ln(2 if level > 1 else 0)
        pdf.set_font(FONT, "B", _HEADING_PT[level])
        pdf.multi_cell(0, _HEADING_PT[level] * 0.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", _BODY_PT)
        pdf.ln(1)

    def paragraph(self, text: str) -> None:
        """A paragraph of body text."""
        self.pdf.set_font(FONT, "", _BODY_PT)
        self.pdf.multi_cell(0, 4.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1.5)

    def facts(self, rows: Sequence[tuple[str, str]]) -> None:
        """Name: value lines, names in bold."""
        pdf = self.pdf
        for name, value in rows:
            pdf.set_font(FONT, "B", _BODY_PT)
            pdf.cell(42, 4.5, name)
            pdf.set_font(FONT, "", _BODY_PT)
            pdf.multi_cell(0, 4.5, value, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1.5)

    def table(
        self,
        headings: Sequence[str],
        rows: Sequence[Sequence[str]],
        widths: Sequence[float],
        *,
        empty: str = "none",
    ) -> None:
        """A table with a heading row (repeated on each page it runs over); ``widths`` are the
        columns' relative widths; without rows, the ``empty`` sentence instead."""
        if not rows:
            self.paragraph(empty)
            return
        pdf = self.pdf
        pdf.set_font(FONT, "", _TABLE_PT)
        with pdf.table(
            col_widths=tuple(widths),
            text_align="LEFT",
            line_height=_TABLE_PT * 0.45,
            headings_style=_HEADINGS,
            padding=0.6,
        ) as table:
            for cells in (headings, *rows):
                row = table.row()
                for cell in cells:
                    row.cell(cell)
        pdf.set_font(FONT, "", _BODY_PT)
        pdf.ln(2)

    def image(self, png: bytes, width_mm: float | None = None) -> None:
        """A picture across the page (or ``width_mm`` wide), on the next page if it does not fit
        on this one."""
        self.pdf.image(io.BytesIO(png), w=width_mm or self.width_mm)
        self.pdf.ln(2)

    def figure(self, title: str, png: bytes, width_mm: float | None = None) -> None:
        """A level-3 heading and its picture, kept on one page."""
        width = width_mm or self.width_mm
        px_wide, px_high = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        if self.pdf.y + 10 + width * px_high / px_wide > self.pdf.page_break_trigger:
            self.pdf.add_page()
        self.heading(title, 3)
        self.image(png, width)

    def new_page(self) -> None:
        """Go on on a new page."""
        self.pdf.add_page()

    def output(self) -> bytes:
        """The PDF."""
        return bytes(self.pdf.output())
