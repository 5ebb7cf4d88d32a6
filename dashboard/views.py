"""Dashboard pages: thin; the figures come from the /v1 API, fetched by the page."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.shortcuts import render
from django.templatetags.static import static
from django.utils import timezone

from dashboard import pages
from dashboard.csp import with_csp


@with_csp
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    # login_required: request.user is a User here, never the AnonymousUser.
    devices = pages.devices_for(request.user)  # type: ignore[arg-type]
    device = pages.pick_device(devices, request.GET.get("device"))
    if device is None and request.GET.get("device"):
        # Another household's device looks exactly like one that does not exist.
        raise Http404("No such device.")
    context: dict[str, object] = {"devices": devices, "device": device}
    if device is not None:
        context["config"] = pages.page_config(device, timezone.now(), request.GET.get("day"))
    return render(request, "dashboard/dashboard.html", context)


login = with_csp(auth_views.LoginView.as_view(redirect_authenticated_user=True))
logout = with_csp(auth_views.LogoutView.as_view())


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico: the dashboard's icon (its hashed name is known only at request time
    with the manifest storage)."""
    return HttpResponsePermanentRedirect(static("dashboard/icon.svg"))
