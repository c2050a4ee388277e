package portforward

import (
	"io"
	"net/http"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream"
)

func TestUpgradedTellsRefusalsApart(t *testing.T) {
	resp := func(code int, hdr map[string]string, body string) *http.Response {
		h := http.Header{}
		for k, v := range hdr {
			h.Set(k, v)
		}
		return &http.Response{StatusCode: code, Status: http.StatusText(code), Header: h, Body: io.NopCloser(strings.NewReader(body))}
	}
	ok := map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "portforward.k8s.io"}
	if err := upgraded(resp(http.StatusSwitchingProtocols, ok, "")); err != nil {
		t.Errorf("a 101 to SPDY/3.1: %v", err)
	}
	forbidden := `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"x\" is forbidden: User \"u\" cannot create resource \"pods/portforward\"","reason":"Forbidden","code":403}`
	if err := upgraded(resp(http.StatusForbidden, nil, forbidden)); !apierrors.IsForbidden(err) || httpstream.IsUpgradeFailure(err) {
		t.Errorf("a 403 Status: %v, want the API server's Forbidden (no fallback)", err)
	}
	for _, r := range []*http.Response{
		resp(http.StatusOK, nil, "<html>a proxy's page</html>"),
		resp(http.StatusBadRequest, nil, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Upgrade request required","reason":"BadRequest","code":400}`),
		resp(http.StatusSwitchingProtocols, map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, ""),
		resp(http.StatusSwitchingProtocols, map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "portforward.k8s.io.v2"}, ""),
	} {
		if err := upgraded(r); !httpstream.IsUpgradeFailure(err) {
			t.Errorf("%d %v: %v, want an UpgradeFailureError (the WebSocket tunnel is tried next)", r.StatusCode, r.Header, err)
		}
	}
}
