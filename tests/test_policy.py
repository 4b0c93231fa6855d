"""Every route, for every demo user and anonymously, against a hand-written expectation.

The expectations here are written independently of ``server.policy``: if a grant changes there,
this table must be changed too, on purpose. A route added to the API without a row here fails
``test_matrix_covers_every_route``.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydicom

from server.app import api_router
from tests.helpers import DEMO_USERS, Api
from tests.imaging.dicomfiles import bundled
from tests.test_dicomweb import STOW_TYPE, multipart, with_new_uids

GRASSROOTS = frozenset({"chengguan", "baji", "jiaji"})
CENTRE_STAFF = frozenset(
    {"coordinator", "ecg", "radiology", "consult", "lab", "pathology", "neuro"}
)
CLINICAL = GRASSROOTS | CENTRE_STAFF
REFERRERS = GRASSROOTS | CENTRE_STAFF
EVERYONE = frozenset(DEMO_USERS)
#: Everyone but the lab information system's account (which only signs in and files results).
PEOPLE = EVERYONE - {"lis"}
SPECIALISTS = frozenset({"ecg", "radiology", "consult", "lab", "pathology", "neuro"})
#: The lab information system's account.
INTERFACES = frozenset({"lis"})
#: Who may store images: grassroots doctors and specialists.
IMAGE_WRITERS = GRASSROOTS | SPECIALISTS
#: Who sees a consult from 城关镇卫生院 to the imaging centre.
IMAGING_CONSULT = frozenset({"chengguan", "radiology", "coordinator"})

_counter = itertools.count(1)


@dataclass(frozen=True)
class Ctx:
    jiaji_patient: str  # 王秀英, known at 贾集村卫生室 only
    lead_hospital: str
    some_user: str
    chengguan_patient: str = ""  # 张桂兰, known at 城关镇卫生院
    consult: str = ""  # chengguan → imaging, submitted
    report: str = ""  # a signed imaging report of another chengguan consult
    radiology: str = ""  # the radiology specialist's user id
    event: str = ""  # an event in chengguan's own stream
    attachment: str = ""  # a file on the matrix consult
    referral: str = ""  # chengguan → lead hospital, requested
    call_consult: str = ""  # chengguan → imaging, claimed by radiology, with a live call
    call: str = ""  # chengguan rings radiology
    coordinator: str = ""  # the coordinator's user id
    study: str = ""  # a CT study chengguan stored into the matrix consult: study/series/instance
    series: str = ""
    instance: str = ""
    ecg: str = ""  # an ECG on the same consult: "study/series/instance"
    upload: str = ""  # chengguan's resumable upload of 7 bytes


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the route template
    url: Callable[[Ctx], str]
    allowed: frozenset[str]
    #: What a user both allowed and in scope gets (a 409 means the policy let it through to the
    #: state machine, which is the point here).
    ok: int
    body: Callable[[Ctx], dict[str, Any] | None] = lambda _: None
    #: Status for users the role allows but the institution scope does not.
    out_of_scope: int | None = None
    in_scope: frozenset[str] = EVERYONE
    #: A raw body (uploads) instead of JSON.
    raw: bytes | None = None
    #: Exact answers for some users, where the loop's order changes the state (first wins).
    exact: tuple[tuple[str, int], ...] = ()


def _new_patient(_: Ctx) -> dict[str, Any]:
    import datetime as dt

    from server.identity import make_national_id

    n = next(_counter)
    return {
        "national_id": make_national_id(
            "411625", dt.date(1970, 1, 1) + dt.timedelta(days=n), 1 + 2 * n
        ),
        "name": "矩阵测试",
    }


def _new_user(ctx: Ctx) -> dict[str, Any]:
    return {
        "username": f"matrix{next(_counter)}",
        "display_name": "矩阵 测试",
        "institution_id": ctx.lead_hospital,
        "password": "a-long-password-1",
        "roles": ["supervisor"],
    }


def _new_institution(ctx: Ctx) -> dict[str, Any]:
    return {
        "code": f"m{next(_counter)}",
        "name_zh": "矩阵卫生院",
        "kind": "township_health_centre",
        "parent_id": ctx.lead_hospital,
    }


def _at(template: str) -> Callable[[Ctx], str]:
    """The URL of an imaging route for the matrix's stored CT."""

    def url(c: Ctx) -> str:
        return (
            template.replace("{study}", c.study)
            .replace("{series}", c.series)
            .replace("{instance}", c.instance)
            .replace("{frames}", "1")
            .replace("{frame}", "1")
            .replace("{tag_path}", "7FE00010")
        )

    return url


def _attachment_at(suffix: str) -> Callable[[Ctx], str]:
    def url(c: Ctx) -> str:
        return f"/api/v1/attachments/{c.attachment}{suffix}"

    return url


def _transition(
    action: str,
    allowed: frozenset[str],
    ok: int,
    in_scope: frozenset[str],
    body: Callable[[Ctx], dict[str, Any] | None] = lambda _: {},
) -> Case:
    return Case(
        "POST",
        f"/api/v1/consults/{{consult_id}}/{action}",
        lambda c: f"/api/v1/consults/{c.consult}/{action}",
        allowed,
        ok,
        body=body,
        out_of_scope=404,
        in_scope=in_scope,
    )


def _call_step(
    method: str,
    suffix: str,
    *,
    ok: int = 200,
    body: Callable[[Ctx], dict[str, Any] | None] = lambda _: None,
    exact: tuple[tuple[str, int], ...] = (),
    with_coordinator: bool = False,
) -> Case:
    """The matrix call: chengguan rang radiology; radiology invites the coordinator, who is
    evaluated before radiology in the user loop (so is not yet a participant at /invite)."""
    members = {"chengguan", "radiology"} | ({"coordinator"} if with_coordinator else set())
    return Case(
        method,
        f"/api/v1/calls/{{call_id}}{suffix}",
        lambda c: f"/api/v1/calls/{c.call}{suffix}",
        REFERRERS,
        ok,
        body=body,
        out_of_scope=404,
        in_scope=frozenset(members),
        exact=exact,
    )


def _referral_step(action: str, first: str | None = None) -> Case:
    """Sender chengguan, receiver coordinator: ``first`` (who comes first in the user loop)
    moves the referral on; after it, the state machine answers 409 before any role check."""
    return Case(
        "POST",
        f"/api/v1/referrals/{{referral_id}}/{action}",
        lambda c: f"/api/v1/referrals/{c.referral}/{action}",
        REFERRERS,
        409,
        body=lambda c: {},
        out_of_scope=404,
        in_scope=frozenset({"chengguan", "coordinator"}),
        exact=((first, 200),) if first else (),
    )


CASES: tuple[Case, ...] = (
    Case("GET", "/api/v1/auth/me", lambda c: "/api/v1/auth/me", EVERYONE, 200),
    Case(
        "POST",
        "/api/v1/auth/password",
        lambda c: "/api/v1/auth/password",
        EVERYONE,
        422,  # reached: the wrong current password is refused by the handler, not the policy
        body=lambda c: {"current_password": "wrong-password", "new_password": "another-password-2"},
    ),
    Case("GET", "/api/v1/institutions", lambda c: "/api/v1/institutions", PEOPLE, 200),
    Case(
        "GET",
        "/api/v1/institutions/{institution_id}",
        lambda c: f"/api/v1/institutions/{c.lead_hospital}",
        PEOPLE,
        200,
    ),
    Case(
        "POST",
        "/api/v1/institutions",
        lambda c: "/api/v1/institutions",
        frozenset({"admin"}),
        201,
        body=_new_institution,
    ),
    Case(
        "PATCH",
        "/api/v1/institutions/{institution_id}",
        lambda c: f"/api/v1/institutions/{c.lead_hospital}",
        frozenset({"admin"}),
        200,
        body=lambda c: {"name_en": "County People's Hospital"},
    ),
    Case("GET", "/api/v1/centres", lambda c: "/api/v1/centres", PEOPLE, 200),
    Case("GET", "/api/v1/targets", lambda c: "/api/v1/targets", PEOPLE, 200),
    Case("GET", "/api/v1/presence", lambda c: "/api/v1/presence", PEOPLE, 200),
    Case("GET", "/api/v1/rtc/ice-servers", lambda c: "/api/v1/rtc/ice-servers", EVERYONE, 200),
    Case(
        "PUT",
        "/api/v1/targets/{centre}/{priority}",
        lambda c: "/api/v1/targets/ecg/routine",
        frozenset({"admin"}),
        200,
        body=lambda c: {"minutes": 1440},
    ),
    Case("GET", "/api/v1/users", lambda c: "/api/v1/users", frozenset({"admin"}), 200),
    Case(
        "GET",
        "/api/v1/users/{user_id}",
        lambda c: f"/api/v1/users/{c.some_user}",
        frozenset({"admin"}),
        200,
    ),
    Case(
        "POST",
        "/api/v1/users",
        lambda c: "/api/v1/users",
        frozenset({"admin"}),
        201,
        body=_new_user,
    ),
    Case(
        "PATCH",
        "/api/v1/users/{user_id}",
        lambda c: f"/api/v1/users/{c.some_user}",
        frozenset({"admin"}),
        200,
        body=lambda c: {"display_name": "医共体监管 周主任"},
    ),
    Case("GET", "/api/v1/patients", lambda c: "/api/v1/patients", CLINICAL, 200),
    Case(
        "POST",
        "/api/v1/patients",
        lambda c: "/api/v1/patients",
        GRASSROOTS,
        201,
        body=_new_patient,
    ),
    Case(
        "GET",
        "/api/v1/patients/{patient_id}",
        lambda c: f"/api/v1/patients/{c.jiaji_patient}",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=frozenset({"jiaji"}),
    ),
    Case(
        "PATCH",
        "/api/v1/patients/{patient_id}",
        lambda c: f"/api/v1/patients/{c.jiaji_patient}",
        GRASSROOTS,
        200,
        body=lambda c: {"phone": "13800000000"},
        out_of_scope=404,
        in_scope=frozenset({"jiaji"}),
    ),
    Case(
        "GET", "/api/v1/audit", lambda c: "/api/v1/audit", frozenset({"admin", "supervisor"}), 200
    ),
    # -- consults, in an order that walks the matrix consult through its states --------------
    Case(
        "POST",
        "/api/v1/consults",
        lambda c: "/api/v1/consults",
        GRASSROOTS,
        201,
        body=lambda c: {"patient_id": c.chengguan_patient, "centre": "imaging", "question": "?"},
        out_of_scope=422,  # the patient is not theirs
        in_scope=frozenset({"chengguan"}),
    ),
    Case("GET", "/api/v1/consults", lambda c: "/api/v1/consults", CLINICAL, 200),
    Case(
        "GET",
        "/api/v1/consults/{consult_id}",
        lambda c: f"/api/v1/consults/{c.consult}",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/centres/{centre}/worklist",
        lambda c: "/api/v1/centres/imaging/worklist",
        CLINICAL,
        200,
        out_of_scope=403,
        in_scope=frozenset({"radiology", "coordinator"}),
    ),
    Case(
        "GET",
        "/api/v1/centres/{centre}/specialists",
        lambda c: "/api/v1/centres/imaging/specialists",
        CLINICAL,
        200,
        out_of_scope=403,
        in_scope=frozenset({"radiology", "coordinator"}),
    ),
    _transition("submit", GRASSROOTS, 409, frozenset({"chengguan"})),  # already submitted
    _transition("claim", SPECIALISTS, 200, frozenset({"radiology"})),
    _transition("release", SPECIALISTS, 200, frozenset({"radiology"})),
    _transition(
        "reassign",
        frozenset({"coordinator"}),
        200,
        frozenset({"coordinator"}),
        body=lambda c: {"assignee_id": c.radiology},
    ),
    _transition(
        "return", SPECIALISTS, 200, frozenset({"radiology"}), body=lambda c: {"note": "补充"}
    ),
    _transition(
        "escalate",
        SPECIALISTS,
        409,  # returned, not claimed
        frozenset({"radiology"}),
        body=lambda c: {"institution_id": c.lead_hospital, "note": "x"},
    ),
    _transition("acknowledge", GRASSROOTS, 409, frozenset({"chengguan"})),
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/reports",
        lambda c: f"/api/v1/consults/{c.consult}/reports",
        SPECIALISTS,
        409,  # returned: no report now
        body=lambda c: {"content": {"kind": "imaging"}},
        out_of_scope=404,
        in_scope=frozenset({"radiology"}),
    ),
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/messages",
        lambda c: f"/api/v1/consults/{c.consult}/messages",
        CLINICAL,
        201,
        body=lambda c: {"body": "请补充病史"},
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/consults/{consult_id}/messages",
        lambda c: f"/api/v1/consults/{c.consult}/messages",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/attachments",
        lambda c: f"/api/v1/consults/{c.consult}/attachments?filename=note.txt",
        CLINICAL,
        201,
        body=lambda c: None,
        raw=b"supplementary history",
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/consults/{consult_id}/attachments",
        lambda c: f"/api/v1/consults/{c.consult}/attachments",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/attachments/{attachment_id}",
        lambda c: f"/api/v1/attachments/{c.attachment}",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/attachments/{attachment_id}/preview",
        lambda c: f"/api/v1/attachments/{c.attachment}/preview",
        CLINICAL,
        422,  # the matrix attachment is a text file, not a picture: the policy let it through
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/referrals",
        lambda c: f"/api/v1/consults/{c.consult}/referrals",
        REFERRERS,
        409,  # no signed report advises it
        body=lambda c: {"direction": "up", "to_institution_id": c.lead_hospital, "reason": "x"},
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case("GET", "/api/v1/referrals", lambda c: "/api/v1/referrals", REFERRERS, 200),
    Case(
        "GET",
        "/api/v1/referrals/{referral_id}",
        lambda c: f"/api/v1/referrals/{c.referral}",
        REFERRERS,
        200,
        out_of_scope=404,
        in_scope=frozenset({"chengguan", "coordinator"}),
    ),
    _referral_step("accept", first="coordinator"),
    _referral_step("complete", first="coordinator"),
    _referral_step("decline"),
    _referral_step("cancel"),
    _transition("cancel", GRASSROOTS, 200, frozenset({"chengguan"})),
    Case(
        "GET",
        "/api/v1/reports/{report_id}",
        lambda c: f"/api/v1/reports/{c.report}",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "PATCH",
        "/api/v1/reports/{report_id}",
        lambda c: f"/api/v1/reports/{c.report}",
        SPECIALISTS,
        409,  # signed: frozen
        body=lambda c: {"content": {"kind": "imaging"}},
        out_of_scope=404,
        in_scope=frozenset({"radiology"}),
    ),
    Case(
        "POST",
        "/api/v1/reports/{report_id}/sign",
        lambda c: f"/api/v1/reports/{c.report}/sign",
        SPECIALISTS,
        409,  # already signed
        out_of_scope=404,
        in_scope=frozenset({"radiology"}),
    ),
    Case(
        "POST",
        "/api/v1/reports/{report_id}/amend",
        lambda c: f"/api/v1/reports/{c.report}/amend",
        SPECIALISTS,
        201,
        out_of_scope=404,
        in_scope=frozenset({"radiology"}),
    ),
    Case(
        "GET",
        "/api/v1/reports/{report_id}/pdf",
        lambda c: f"/api/v1/reports/{c.report}/pdf",  # v1 stays signed beside the v2 draft
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/calls",
        lambda c: f"/api/v1/consults/{c.call_consult}/calls",
        REFERRERS,
        409,  # a call is already live on it
        body=lambda c: {"invitee_ids": [c.radiology]},
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    _call_step("GET", "", ok=200),
    _call_step("GET", "/invitees", ok=200),
    _call_step(
        "POST",
        "/invite",
        body=lambda c: {"user_id": c.coordinator},
        exact=(("coordinator", 404), ("radiology", 200), ("chengguan", 409)),
    ),
    _call_step(
        "POST", "/accept", exact=(("coordinator", 200), ("radiology", 200), ("chengguan", 409))
    ),
    _call_step(
        "POST", "/connected", exact=(("coordinator", 200), ("radiology", 200), ("chengguan", 200))
    ),
    # Recording: asked by the first member in the loop; nobody can start it without every
    # member's consent (409), so no recorder is ever launched here.
    _call_step("POST", "/recording/start", ok=409, with_coordinator=True),
    _call_step(
        "POST",
        "/recording",
        exact=(("coordinator", 201), ("radiology", 409), ("chengguan", 409)),
        with_coordinator=True,
    ),
    _call_step("GET", "/recording", ok=200, with_coordinator=True),
    _call_step(
        "POST",
        "/recording/consent",
        body=lambda c: {"consent": False},
        exact=(("coordinator", 409), ("radiology", 200), ("chengguan", 409)),
        with_coordinator=True,
    ),
    # Refused: nothing is recording, so nothing to stop (409 for every member).
    _call_step("POST", "/recording/stop", ok=409, with_coordinator=True),
    _call_step("POST", "/decline", ok=409, with_coordinator=True),
    _call_step(
        "POST", "/hangup", exact=(("coordinator", 200), ("radiology", 200), ("chengguan", 409))
    ),
    Case("GET", "/api/v1/events", lambda c: "/api/v1/events", EVERYONE, 200),
    Case(
        "GET",
        "/api/v1/figures",
        lambda c: "/api/v1/figures",
        frozenset({"supervisor", "coordinator"}),
        200,
    ),
    Case(
        "POST",
        "/api/v1/events/ack",
        lambda c: "/api/v1/events/ack",
        EVERYONE,
        200,
        body=lambda c: {"up_to": int(c.event)},
        out_of_scope=404,  # not an event of theirs
        in_scope=frozenset({"chengguan"}),
    ),
    # -- imaging (chengguan stored a CT and an ECG into the matrix consult) ------------------
    *[
        Case("GET", path, _at(path), CLINICAL, 200)
        for path in (
            "/dicomweb/studies",
            "/dicomweb/series",
            "/dicomweb/instances",
            "/dicomweb/studies/{study}/series",
            "/dicomweb/studies/{study}/instances",
        )
    ],
    Case(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances",
        lambda c: f"/dicomweb/studies/{c.study}/series/{c.series}/instances",
        CLINICAL,
        200,  # a search: empty for those who may not see it
    ),
    Case("POST", "/dicomweb/studies", lambda c: "/dicomweb/studies", IMAGE_WRITERS, 415, raw=b"x"),
    Case(
        "POST",
        "/dicomweb/studies/{study}",
        lambda c: f"/dicomweb/studies/{c.study}",
        IMAGE_WRITERS,
        415,  # the policy let it through; the body is not multipart
        raw=b"x",
    ),
    *[
        Case(
            "GET",
            "/dicomweb/studies/{study}" + suffix,
            _at("/dicomweb/studies/{study}" + suffix),
            CLINICAL,
            200,
            out_of_scope=404,
            in_scope=IMAGING_CONSULT,
        )
        for suffix in (
            "",
            "/metadata",
            "/thumbnail",
            "/rendered",
            "/series/{series}",
            "/series/{series}/metadata",
            "/series/{series}/thumbnail",
            "/series/{series}/rendered",
            "/series/{series}/instances/{instance}",
            "/series/{series}/instances/{instance}/metadata",
            "/series/{series}/instances/{instance}/thumbnail",
            "/series/{series}/instances/{instance}/rendered",
            "/series/{series}/instances/{instance}/frames/{frames}",
            "/series/{series}/instances/{instance}/frames/{frame}/rendered",
            "/series/{series}/instances/{instance}/bulkdata/{tag_path}",
        )
    ],
    Case(
        "GET",
        "/wado",
        lambda c: (
            f"/wado?requestType=WADO&studyUID={c.study}&seriesUID={c.series}"
            f"&objectUID={c.instance}&contentType=application/dicom"
        ),
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/consults/{consult_id}/studies",
        lambda c: f"/api/v1/consults/{c.consult}/studies",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/studies",
        lambda c: f"/api/v1/consults/{c.consult}/studies",
        IMAGE_WRITERS,
        409,  # the matrix consult was cancelled above: it takes no more images
        body=lambda c: {"study_uid": c.study},
        out_of_scope=404,
        in_scope=frozenset({"chengguan", "radiology"}),
    ),
    Case(
        "GET",
        "/api/v1/ecg/{study}/{series}/{instance}",
        lambda c: f"/api/v1/ecg/{c.ecg}",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    Case(
        "GET",
        "/api/v1/ecg/{study}/{series}/{instance}/svg",
        lambda c: f"/api/v1/ecg/{c.ecg}/svg",
        CLINICAL,
        200,
        out_of_scope=404,
        in_scope=IMAGING_CONSULT,
    ),
    *[
        Case(
            "GET",
            "/api/v1/slides/{study}/{series}" + suffix,
            _at(
                "/api/v1/slides/{study}/{series}"
                + suffix.replace("{level}", "0").replace("{column}", "0").replace("{row}", "0")
            ),
            CLINICAL,
            404,  # the matrix study is a CT, not a slide: the policy let it through
        )
        for suffix in ("", "/tiles/{level}/{column}/{row}")
    ],
    *[
        Case(
            "GET",
            "/api/v1/attachments/{attachment_id}" + suffix,
            _attachment_at(suffix),
            CLINICAL,
            404,  # the matrix attachment is a text file, not an aECG
        )
        for suffix in ("/ecg", "/ecg/svg")
    ],
    Case(
        "POST",
        "/api/v1/uploads",
        lambda c: "/api/v1/uploads",
        IMAGE_WRITERS,
        201,
        body=lambda c: {"size": 10, "filename": "a.dcm"},
    ),
    Case(
        "GET",
        "/api/v1/uploads/{upload_id}",
        lambda c: f"/api/v1/uploads/{c.upload}",
        IMAGE_WRITERS,
        200,
        out_of_scope=404,
        in_scope=frozenset({"chengguan"}),
    ),
    Case(
        "PUT",
        "/api/v1/uploads/{upload_id}",
        lambda c: f"/api/v1/uploads/{c.upload}?offset=0",
        IMAGE_WRITERS,
        200,
        out_of_scope=404,
        in_scope=frozenset({"chengguan"}),
        raw=b"history",
    ),
    Case(
        "POST",
        "/api/v1/uploads/{upload_id}/complete",
        lambda c: f"/api/v1/uploads/{c.upload}/complete",
        IMAGE_WRITERS,
        422,  # seven bytes of text are not DICOM
        out_of_scope=404,
        in_scope=frozenset({"chengguan"}),
    ),
    *[
        Case(
            "DELETE",
            "/dicomweb/studies/{study}" + suffix,
            _at(
                "/dicomweb/studies/1.2.3"
                + suffix.replace("{series}", "4.5").replace("{instance}", "6.7")
            ),
            frozenset({"admin"}),
            404,  # no such study: the matrix keeps its own
        )
        for suffix in ("", "/series/{series}", "/series/{series}/instances/{instance}")
    ],
    Case(
        "POST",
        "/api/v1/consults/{consult_id}/critical/acknowledge",
        lambda c: f"/api/v1/consults/{c.consult}/critical/acknowledge",
        GRASSROOTS,
        409,  # no critical value waiting
        body=lambda c: {},
        out_of_scope=404,
        in_scope=frozenset({"chengguan"}),
    ),
    Case("POST", "/api/v1/lab/hl7v2", lambda c: "/api/v1/lab/hl7v2", INTERFACES, 422, raw=b"x"),
    Case("POST", "/api/v1/lab/fhir", lambda c: "/api/v1/lab/fhir", INTERFACES, 422, raw=b"x"),
    # Sign-out last: it revokes the token the rows above used.
    Case("POST", "/api/v1/auth/logout", lambda c: "/api/v1/auth/logout", EVERYONE, 204),
)

PUBLIC = {("POST", "/api/v1/auth/login")}


def _payload(case: Case, ctx: Ctx) -> dict[str, Any]:
    if case.raw is not None:
        return {"data": case.raw, "headers": {"Content-Type": "text/plain"}}
    body = case.body(ctx)
    return {} if body is None else {"json": body}


def expected(case: Case, user: str) -> int:
    if user in dict(case.exact):
        return dict(case.exact)[user]
    if user not in case.allowed:
        return 403
    if case.out_of_scope is not None and user not in case.in_scope:
        return case.out_of_scope
    return case.ok


def test_matrix_covers_every_route() -> None:
    declared = {(r.method, r.path) for r in api_router().routes}
    covered = {(c.method, c.path) for c in CASES} | PUBLIC
    assert declared == covered


async def _context(api: Api) -> Ctx:
    status, body = await api.get("/api/v1/patients?name=王秀英", "jiaji")
    assert status == 200 and body["total"] == 1
    status, users = await api.get("/api/v1/users", "admin")
    assert status == 200
    supervisor = next(u["id"] for u in users["items"] if u["username"] == "supervisor")
    radiology = next(u["id"] for u in users["items"] if u["username"] == "radiology")
    status, found = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    chengguan_patient = found["items"][0]["id"]
    consults = []
    for _ in range(2):
        status, consult = await api.post(
            "/api/v1/consults",
            "chengguan",
            json={"patient_id": chengguan_patient, "centre": "imaging", "question": "胸片"},
        )
        assert status == 201
        consults.append(consult["id"])
    reported = consults[1]
    await api.post(f"/api/v1/consults/{reported}/claim", "radiology", json={})
    _, draft = await api.post(
        f"/api/v1/consults/{reported}/reports",
        "radiology",
        json={"content": {"kind": "imaging", "impression": "未见异常"}},
    )
    status, _ = await api.post(f"/api/v1/reports/{draft['id']}/sign", "radiology")
    assert status == 200
    status, feed = await api.get("/api/v1/events", "chengguan")
    event = next(e["id"] for e in feed["items"] if e["stream"].startswith("user:"))
    resp = await api.client.post(
        f"/api/v1/consults/{consults[0]}/attachments?filename=history.txt",
        data=b"history",
        headers={**await api.headers("chengguan"), "Content-Type": "text/plain"},
    )
    assert resp.status == 201
    attachment = (await resp.json())["id"]
    status, referred = await api.post(
        "/api/v1/consults",
        "chengguan",
        json={"patient_id": chengguan_patient, "centre": "imaging", "question": "转诊"},
    )
    await api.post(f"/api/v1/consults/{referred['id']}/claim", "radiology", json={})
    advice = {"kind": "imaging", "referral": {"direction": "up", "green_channel": True}}
    _, draft2 = await api.post(
        f"/api/v1/consults/{referred['id']}/reports", "radiology", json={"content": advice}
    )
    await api.post(f"/api/v1/reports/{draft2['id']}/sign", "radiology")
    status, referral = await api.post(
        f"/api/v1/consults/{referred['id']}/referrals",
        "chengguan",
        json={
            "direction": "up",
            "to_institution_id": await api.institution_id("xrmyy"),
            "reason": "需上级医院进一步检查",
        },
    )
    assert status == 201
    coordinator = next(u["id"] for u in users["items"] if u["username"] == "coordinator")
    status, video = await api.post(
        f"/api/v1/consults/{referred['id']}/calls", "chengguan", json={"invitee_ids": [radiology]}
    )
    assert status == 201
    ct = with_new_uids(bundled("CT_small.dcm"))
    ecg = with_new_uids(bundled("waveform_ecg.dcm"))
    status, stowed = await api.post(
        f"/dicomweb/studies?consult={consults[0]}",
        "chengguan",
        data=multipart(ct, ecg),
        headers={"Content-Type": STOW_TYPE},
    )
    assert status == 200, stowed
    ct_ds, ecg_ds = (pydicom.dcmread(io.BytesIO(d)) for d in (ct, ecg))
    status, upload = await api.post(
        "/api/v1/uploads", "chengguan", json={"size": 7, "filename": "history.txt"}
    )
    assert status == 201
    return Ctx(
        study=ct_ds.StudyInstanceUID,
        series=ct_ds.SeriesInstanceUID,
        instance=ct_ds.SOPInstanceUID,
        ecg=f"{ecg_ds.StudyInstanceUID}/{ecg_ds.SeriesInstanceUID}/{ecg_ds.SOPInstanceUID}",
        upload=upload["id"],
        jiaji_patient=body["items"][0]["id"],
        lead_hospital=await api.institution_id("xrmyy"),
        some_user=supervisor,
        chengguan_patient=chengguan_patient,
        consult=consults[0],
        report=draft["id"],
        radiology=radiology,
        event=str(event),
        attachment=attachment,
        referral=referral["id"],
        call_consult=referred["id"],
        call=video["id"],
        coordinator=coordinator,
    )


async def test_every_route_for_every_user(api: Api) -> None:
    ctx = await _context(api)
    mismatches = []
    for case in CASES:
        for user in DEMO_USERS:
            status, answer = await api.call(case.method, case.url(ctx), user, **_payload(case, ctx))
            want = expected(case, user)
            if status != want:
                mismatches.append((case.method, case.path, user, want, status, answer))
            elif status >= 400:
                assert isinstance(answer, dict) and answer["status"] == status
    assert mismatches == []


async def test_every_protected_route_refuses_anonymous_callers(api: Api) -> None:
    ctx = await _context(api)
    for case in CASES:
        status, answer = await api.call(case.method, case.url(ctx), None, **_payload(case, ctx))
        assert status == 401, (case.method, case.path)
        assert answer["code"] == "unauthenticated"


async def test_township_sees_its_village_clinics_patients_but_not_the_reverse(api: Api) -> None:
    """城关镇卫生院 oversees 东关村卫生室; a patient registered there is visible to the township,
    while the village clinic does not see patients known only at the township."""
    dongguan = await api.institution_id("dongguan")
    status, _ = await api.post(
        "/api/v1/users",
        "admin",
        json={
            "username": "dongguan-doc",
            "display_name": "东关村 医生",
            "institution_id": dongguan,
            "password": "dongguan-password",
            "roles": ["grassroots_doctor"],
        },
    )
    assert status == 201
    await api.login("dongguan-doc", "dongguan-password")
    new = _new_patient(Ctx("", "", ""))
    status, village_patient = await api.post("/api/v1/patients", "dongguan-doc", json=new)
    assert status == 201
    status, _ = await api.get(f"/api/v1/patients/{village_patient['id']}", "chengguan")
    assert status == 200
    status, _ = await api.get(f"/api/v1/patients/{village_patient['id']}", "baji")
    assert status == 404

    status, township = await api.get("/api/v1/patients?name=张桂兰", "chengguan")
    assert status == 200 and township["total"] == 1
    status, _ = await api.get(f"/api/v1/patients/{township['items'][0]['id']}", "dongguan-doc")
    assert status == 404
    status, listing = await api.get("/api/v1/patients", "dongguan-doc")
    # 赵志强 is known at both 城关镇卫生院 and 东关村卫生室 in the demo data.
    assert sorted(p["name"] for p in listing["items"]) == ["矩阵测试", "赵志强"]
