"""What a report printout shows: the :class:`Printable`, the labels its values print as, and
times and ages the way a Chinese report writes them. ``server.printout`` lays it out on the page.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.consultflow import Priority
from server.models import Centre, Sex


def _china_tz() -> dt.tzinfo:
    try:
        return ZoneInfo("Asia/Shanghai")
    except ZoneInfoNotFoundError:  # pragma: no cover - no tz database: China keeps UTC+8, no DST
        return dt.timezone(dt.timedelta(hours=8), "CST")


CHINA = _china_tz()


@dataclass(frozen=True, slots=True)
class Printable:
    """Everything the PDF shows, read from the database before rendering (no full national ID:
    the printout carries the masked form only)."""

    hospital: str
    centre: Centre
    centre_zh: str
    centre_en: str
    consult_id: uuid.UUID
    priority: Priority
    question: str
    clinical_summary: str
    requester_institution: str
    requester_doctor: str
    escalated_to: str
    submitted_at: dt.datetime | None
    patient_name: str
    patient_sex: Sex
    birth_date: dt.date
    national_id_masked: str
    version: int
    content: Mapping[str, Any]
    critical: bool
    signer: str
    signer_institution: str
    signed_at: dt.datetime
    sha256: str

    @property
    def short_id(self) -> str:
        return str(self.consult_id)[:8]

    @property
    def filename(self) -> str:
        return f"report-{self.short_id}-v{self.version}.pdf"


def age_on(birth: dt.date, on: dt.date) -> str:
    """Age as a Chinese report prints it: years, or months, or days for an infant."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 1:
        return f"{years}岁"
    months = (on.year - birth.year) * 12 + on.month - birth.month - (on.day < birth.day)
    if months >= 1:
        return f"{months}个月"
    return f"{max((on - birth).days, 0)}天"


def local_time(moment: dt.datetime | None, *, seconds: bool = False) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


# -- labels -----------------------------------------------------------------------------------

TITLES = {
    Centre.ECG: ("诊断报告", "report"),
    Centre.IMAGING: ("诊断报告", "report"),
    Centre.CONSULTATION: ("会诊报告", "consultation report"),
    Centre.LAB: ("检验报告", "report"),
    Centre.PATHOLOGY: ("诊断报告", "report"),
}
SEX = {Sex.MALE: "男", Sex.FEMALE: "女"}
PRIORITY = {Priority.ROUTINE: "常规", Priority.URGENT: "加急", Priority.STAT: "紧急"}
FLAGS = {
    "normal": "",
    "low": "↓ 偏低",
    "high": "↑ 偏高",
    "critical_low": "↓↓ 危急低值",
    "critical_high": "↑↑ 危急高值",
    "abnormal": "* 异常",
}
REFERRAL = {"none": "无需转诊", "up": "上转（转上级医院）", "down": "下转（转基层机构）"}
QTC_FORMULAS = {
    "bazett": "Bazett",
    "fridericia": "Fridericia",
    "framingham": "Framingham",
    "hodges": "Hodges",
}
#: The ECG measurements table: key, Chinese label, unit.
ECG_MEASUREMENTS = (
    ("hr_bpm", "心率 HR", "次/分"),
    ("pr_ms", "PR 间期", "ms"),
    ("qrs_ms", "QRS 时限", "ms"),
    ("qt_ms", "QT 间期", "ms"),
    ("qtc_ms", "QTc", "ms"),
    ("p_axis_deg", "P 电轴", "°"),
    ("qrs_axis_deg", "QRS 电轴", "°"),
    ("t_axis_deg", "T 电轴", "°"),
)
#: The lab results table: key, Chinese and English heading, width in mm. The flag comes last.
LAB_COLUMNS = (
    ("code", "代码", "Code", 20),
    ("name", "项目", "Test", 48),
    ("value", "结果", "Result", 26),
    ("unit", "单位", "Unit", 22),
    ("reference_range", "参考范围", "Reference", 34),
    ("flag", "标志", "Flag", 24),
)

#: A free-text section of the report content: key, Chinese and English heading.
Section = tuple[str, str, str]
#: The sections most centres close with.
CLOSING: tuple[Section, ...] = (
    ("findings", "检查所见", "Findings"),
    ("impression", "诊断意见", "Impression"),
    ("recommendation", "建议", "Recommendation"),
)
#: The free-text sections of each centre's report, in print order (after its tables, if any).
SECTIONS: dict[Centre, tuple[Section, ...]] = {
    Centre.IMAGING: (("technique", "检查方法", "Technique"), *CLOSING),
    Centre.ECG: CLOSING,
    Centre.LAB: CLOSING,
    Centre.CONSULTATION: (
        ("findings", "会诊所见", "Findings"),
        ("assessment", "病情评估", "Assessment"),
        ("impression", "诊断意见", "Impression"),
        ("plan", "处理方案", "Plan"),
        ("recommendation", "建议", "Recommendation"),
    ),
    Centre.PATHOLOGY: (
        ("specimen", "标本", "Specimen"),
        ("gross", "大体所见", "Gross"),
        ("microscopic", "镜下所见", "Microscopic"),
        ("diagnosis", "病理诊断", "Diagnosis"),
        *CLOSING,
    ),
}
