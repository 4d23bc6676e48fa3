"""`GET /api/crates/{id}/report.pdf` and `GET /api/{kind}-requests/{id}/report.pdf`: a record's
printable report (backend.records.reports), for whoever may read the record (unit-scoped like
it: another unit's record is 404). The PDF is written to a spooled temporary file (in memory up
to REPORT_SPOOL_BYTES, then on disk) and streamed from there."""

from __future__ import annotations

import tempfile
import uuid

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.views import APIView

from .lifecycle import request_kind
from .reports import crate_subject, report_print, request_subject
from .selectors import crates_visible_to, may_see_deleted, requests_visible_to

REPORT_SPOOL_BYTES = 8 * 1024 * 1024


class PDFRenderer(BaseRenderer):
    """Names `application/pdf` for content negotiation; the view answers with the file itself, so
    a renderer is only ever given an error, which it renders as the API's JSON error."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return JSONRenderer().render(data)


def _pdf_response(subject, reader) -> FileResponse:
    spool = tempfile.SpooledTemporaryFile(max_size=REPORT_SPOOL_BYTES)  # noqa: SIM115 - the response closes it
    report_print(subject=subject, reader=reader, out=spool)
    spool.seek(0)
    response = FileResponse(spool, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{subject.number}-report.pdf"'
    response["Cache-Control"] = "no-store"
    return response


REPORT_RESPONSES = {
    (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="The record's report (PDF)"),
    404: OpenApiResponse(description="No such record in your unit"),
}


class CrateReportView(APIView):
    renderer_classes = [PDFRenderer, JSONRenderer]

    @extend_schema(responses=REPORT_RESPONSES)
    def get(self, request, pk: uuid.UUID):
        """The crate's printable report: as it is now, its signatures, its whole history, the chain
        check at printing. Printing is audited (`printed`)."""
        include_deleted = may_see_deleted(request.user)
        crate = crates_visible_to(request.user, include_deleted=include_deleted).select_related(
            "unit", "deleted_by").filter(id=pk).first()
        if crate is None:
            raise NotFound("No such crate.")
        return _pdf_response(crate_subject(crate), request.user)


class RequestReportView(APIView):
    renderer_classes = [PDFRenderer, JSONRenderer]
    entity: str = ""

    @extend_schema(responses=REPORT_RESPONSES)
    def get(self, request, pk: uuid.UUID):
        """The request's printable report: as it is now, every signature manifested (printed name,
        date and time, meaning, whether the request changed after it), its whole history, the chain
        check at printing. Printing is audited (`printed`)."""
        kind = request_kind(self.entity)
        related = ["unit", "created_by", "decided_by", "deleted_by"]
        if self.entity == "transfer":
            related.append("destination_unit")
        found = requests_visible_to(request.user, self.entity, include_deleted=may_see_deleted(request.user))
        obj = found.select_related(*related).filter(id=pk).first()
        if obj is None:
            raise NotFound(f"No such {self.entity} request.")
        return _pdf_response(request_subject(kind, obj), request.user)


def request_report_view(entity: str):
    return type(f"{entity.capitalize()}RequestReportView", (RequestReportView,), {"entity": entity}).as_view()
