"""The retry logic of metalxdp.kube's write layer (get_or_create, update_with_retry), driven by
callables that answer as the API server would (an object, 404, 409, 500), with the error type of
each client (metalxdp's RestClient raises ApiError, the kubernetes client ApiException). The
real requests are exercised by the integration tests of the controller, webhook, operator and
agent."""
from __future__ import annotations

import pytest

from metalxdp.kube import ApiError, ApiException, ConflictError, get_or_create, get_or_none, update_with_retry


@pytest.fixture(params=[ApiError, ApiException], ids=["ApiError", "ApiException"])
def error_type(request):
    """Each client's error type in turn; ``answers`` raises it."""
    global RAISED
    RAISED = request.param
    yield request.param


RAISED = ApiError


def answers(*seq):
    """A callable returning (or raising, for an int status) the next answer of ``seq``; ``calls``
    counts the calls."""
    it = iter(seq)

    def call(*_args):
        call.calls += 1
        a = next(it)
        if isinstance(a, int):
            raise RAISED(status=a)
        return a
    call.calls = 0
    return call


GET_OR_CREATE = [  # (description, read answers, create answers, result or status raised, reads, creates)
    ("exists", ("obj",), (), ("obj", False), 1, 0),
    ("missing: created", (404,), ("new",), ("new", True), 1, 1),
    ("lost the create race: the winner's object", (404, "theirs"), (409,), ("theirs", False), 2, 1),
    ("other read error raised", (500,), (), 500, 1, 0),
    ("other create error raised", (404,), (403,), 403, 1, 1),
]


@pytest.mark.parametrize("desc,reads,creates,want,n_reads,n_creates", GET_OR_CREATE,
                         ids=[r[0] for r in GET_OR_CREATE])
def test_get_or_create(desc, reads, creates, want, n_reads, n_creates, error_type):
    read, create = answers(*reads), answers(*creates)
    if isinstance(want, int):
        with pytest.raises(error_type) as e:
            get_or_create(read, create)
        assert e.value.status == want
    else:
        assert get_or_create(read, create) == want
    assert (read.calls, create.calls) == (n_reads, n_creates)


def test_get_or_none(error_type):
    assert get_or_none(answers("obj")) == "obj"
    assert get_or_none(answers(404)) is None
    with pytest.raises(error_type):
        get_or_none(answers(500))


UPDATES = [  # (description, read answers, write answers, result or exception, reads, writes)
    ("written at once", ({"v": 1},), ("ok",), "ok", 1, 1),
    ("nothing to change: no write", ({"v": 2},), (), None, 1, 0),
    ("conflict: read again, then written", ({"v": 1}, {"v": 1}), (409, "ok"), "ok", 2, 2),
    ("conflict on the read (a lost create race): again", (409, {"v": 1}), ("ok",), "ok", 2, 1),
    ("conflicts every time", ({"v": 1},) * 3, (409,) * 3, ConflictError, 3, 3),
    ("other error raised at once", ({"v": 1},), (422,), 422, 1, 1),
]


@pytest.mark.parametrize("desc,reads,writes,want,n_reads,n_writes", UPDATES, ids=[r[0] for r in UPDATES])
def test_update_with_retry(desc, reads, writes, want, n_reads, n_writes, error_type):
    read, write = answers(*reads), answers(*writes)
    change = lambda obj: None if obj["v"] == 2 else {**obj, "v": 2}  # noqa: E731
    if want is ConflictError:
        with pytest.raises(ConflictError, match="thing keeps changing"):
            update_with_retry(read, change, write, what="thing", attempts=3)
    elif isinstance(want, int):
        with pytest.raises(error_type) as e:
            update_with_retry(read, change, write, what="thing", attempts=3)
        assert e.value.status == want
    else:
        assert update_with_retry(read, change, write, what="thing", attempts=3) == want
    assert (read.calls, write.calls) == (n_reads, n_writes)


def test_api_error_message_carries_the_servers_reason():
    e = ApiError(422, "Unprocessable Entity", b'{"kind":"Status","message":"spec.x: Invalid value"}')
    assert (e.status, e.reason) == (422, "Unprocessable Entity")
    assert str(e) == "(422) Unprocessable Entity: spec.x: Invalid value"
    assert str(ApiError(502, "Bad Gateway", b"<html>proxy</html>")) == "(502) Bad Gateway: <html>proxy</html>"
    assert str(ApiError(404, "Not Found")) == "(404) Not Found"
