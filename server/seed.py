"""The demo consortium that ``make run`` seeds into an empty database.

County 郸城县 style: the lead hospital 县人民医院 with its five centres, three township health
centres with two village clinics each, a partner provincial hospital, the demo sign-ins of the
README, and a few patients with valid (fictitious) national IDs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import create_user
from server.directory import host_centres
from server.identity import make_national_id
from server.models import (
    Centre,
    Institution,
    InstitutionKind,
    Patient,
    PatientLink,
    Role,
    Sex,
)
from server.sessions import Passwords

REGION = "411625"  # a county code in Henan, as in the source articles

# code, Chinese name, English name, kind, parent code
INSTITUTIONS: tuple[tuple[str, str, str, InstitutionKind, str | None], ...] = (
    ("xrmyy", "县人民医院", "County People's Hospital", InstitutionKind.LEAD_HOSPITAL, None),
    (
        "chengguan",
        "城关镇卫生院",
        "Chengguan Town Health Centre",
        InstitutionKind.TOWNSHIP_CENTRE,
        "xrmyy",
    ),
    (
        "baji",
        "巴集乡卫生院",
        "Baji Township Health Centre",
        InstitutionKind.TOWNSHIP_CENTRE,
        "xrmyy",
    ),
    (
        "huji",
        "胡集乡卫生院",
        "Huji Township Health Centre",
        InstitutionKind.TOWNSHIP_CENTRE,
        "xrmyy",
    ),
    (
        "dongguan",
        "东关村卫生室",
        "Dongguan Village Clinic",
        InstitutionKind.VILLAGE_CLINIC,
        "chengguan",
    ),
    (
        "wangzhuang",
        "王庄村卫生室",
        "Wangzhuang Village Clinic",
        InstitutionKind.VILLAGE_CLINIC,
        "chengguan",
    ),
    ("duanzhai", "段寨村卫生室", "Duanzhai Village Clinic", InstitutionKind.VILLAGE_CLINIC, "baji"),
    ("liulou", "刘楼村卫生室", "Liulou Village Clinic", InstitutionKind.VILLAGE_CLINIC, "baji"),
    ("jiaji", "贾集村卫生室", "Jiaji Village Clinic", InstitutionKind.VILLAGE_CLINIC, "huji"),
    ("zhangwan", "张湾村卫生室", "Zhangwan Village Clinic", InstitutionKind.VILLAGE_CLINIC, "huji"),
    (
        "shengyi",
        "省人民医院",
        "Provincial People's Hospital",
        InstitutionKind.PARTNER_HOSPITAL,
        None,
    ),
)


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    display_name: str
    institution: str
    roles: frozenset[Role]
    centres: frozenset[Centre] = frozenset()


def _specialist(username: str, name: str, centre: Centre) -> DemoUser:
    return DemoUser(username, name, "xrmyy", frozenset({Role.SPECIALIST}), frozenset({centre}))


USERS: tuple[DemoUser, ...] = (
    DemoUser("admin", "系统管理员", "xrmyy", frozenset({Role.ADMIN})),
    DemoUser("supervisor", "医共体监管 周主任", "xrmyy", frozenset({Role.SUPERVISOR})),
    DemoUser(
        "coordinator",
        "中心调度 吴护士长",
        "xrmyy",
        frozenset({Role.CENTRE_COORDINATOR}),
        frozenset(Centre),
    ),
    _specialist("ecg", "心电 郑医生", Centre.ECG),
    _specialist("radiology", "影像 王医生", Centre.IMAGING),
    _specialist("consult", "会诊 李主任", Centre.CONSULTATION),
    _specialist("lab", "检验 陈医生", Centre.LAB),
    _specialist("pathology", "病理 孙医生", Centre.PATHOLOGY),
    DemoUser(
        "neuro",
        "神经内科 马主任",
        "xrmyy",
        frozenset({Role.STROKE_TEAM, Role.SPECIALIST}),
        frozenset({Centre.CONSULTATION}),
    ),
    DemoUser("chengguan", "城关镇 刘医生", "chengguan", frozenset({Role.GRASSROOTS_DOCTOR})),
    DemoUser("baji", "巴集乡 赵医生", "baji", frozenset({Role.GRASSROOTS_DOCTOR})),
    DemoUser("jiaji", "贾集村 张医生", "jiaji", frozenset({Role.GRASSROOTS_DOCTOR})),
    DemoUser("ambulance-01", "5G 救护车 01", "xrmyy", frozenset({Role.AMBULANCE})),
    DemoUser("lis", "检验科 LIS 接口", "xrmyy", frozenset({Role.INTERFACE})),
)

# name, birth date, sequence (odd: male), card, institutions
PATIENTS: tuple[tuple[str, dt.date, int, str | None, tuple[str, ...]], ...] = (
    ("张桂兰", dt.date(1956, 3, 14), 22, "HC4116250001", ("chengguan",)),
    ("李建国", dt.date(1962, 8, 2), 31, "HC4116250002", ("baji",)),
    ("王秀英", dt.date(1948, 11, 27), 44, None, ("jiaji",)),
    ("赵志强", dt.date(1979, 5, 9), 17, "HC4116250004", ("chengguan", "dongguan")),
    ("陈玉梅", dt.date(1985, 1, 30), 58, None, ("huji",)),
    ("孙小明", dt.date(2015, 6, 1), 73, None, ("jiaji",)),
)


async def is_empty(db: AsyncSession) -> bool:
    return (await db.scalar(select(func.count()).select_from(Institution))) == 0


async def seed_demo(db: AsyncSession, passwords: Passwords, password: str) -> None:
    """Create the demo consortium in ``db``'s transaction. Call only on an empty database."""
    by_code: dict[str, Institution] = {}
    for code, name_zh, name_en, kind, parent in INSTITUTIONS:
        inst = Institution(
            id=uuid.uuid4(),
            code=code,
            name_zh=name_zh,
            name_en=name_en,
            kind=kind,
            parent_id=by_code[parent].id if parent else None,
        )
        db.add(inst)
        by_code[code] = inst
    await db.flush()
    await host_centres(db, code="xrmyy")

    password_hash = await passwords.hash(password)
    for u in USERS:
        await create_user(
            db,
            username=u.username,
            display_name=u.display_name,
            institution=by_code[u.institution],
            password_hash=password_hash,
            roles=set(u.roles),
            centres=set(u.centres),
        )

    for name, birth, seq, card, codes in PATIENTS:
        patient = Patient(
            id=uuid.uuid4(),
            national_id=make_national_id(REGION, birth, seq),
            name=name,
            sex=Sex.MALE if seq % 2 else Sex.FEMALE,
            birth_date=birth,
            health_card_no=card,
            registered_by_institution_id=by_code[codes[0]].id,
        )
        db.add(patient)
        await db.flush()
        for code in codes:
            db.add(PatientLink(patient_id=patient.id, institution_id=by_code[code].id))
    await db.flush()
