"""Pipeline stages, one module each. Heavy libraries are imported in `setup`, not here."""

from stages.html_extract import HtmlExtract
from stages.language_id import LanguageId

STAGES = {stage.name: stage for stage in (HtmlExtract, LanguageId)}
