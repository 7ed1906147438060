package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gxfs-conf/gxconf/test/harness"
)

// TestCatalogAdminPage drives the admin page in Chromium: log in through
// Hydra with password and TOTP, browse the catalogue, book a tier, see the
// booking, cancel it.
func TestCatalogAdminPage(t *testing.T) {
	s, _ := startCatalogStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := harness.StartBrowser(ctx, harness.BrowserOptions{UserDataDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser log:\n%s", b.Log())
		}
		b.Close()
	})
	p, err := b.NewPage("admin")
	require.NoError(t, err)
	eval := func(expr string) string {
		t.Helper()
		var out string
		require.NoError(t, p.Eval(ctx, expr, &out))
		return out
	}
	await := func(what, cond string) {
		t.Helper()
		if !assert.Eventually(t, func() bool {
			var ok bool
			return p.Eval(ctx, "(() => { try { return !!("+cond+"); } catch (e) { return false; } })()", &ok) == nil && ok
		}, 60*time.Second, 100*time.Millisecond) {
			// The page text only now: evaluated up front it ran while the
			// page was navigating (no body yet) and failed the test.
			var text string
			_ = p.Eval(ctx, "document.body ? document.body.innerText : '(no body)'", &text)
			t.Fatalf("waiting for %s; page: %s", what, text)
		}
	}

	require.NoError(t, p.Navigate(ctx, s.FocusURL+"/catalog/admin/"))
	// Browse: the catalogue is public; 5 tiers × 3 levels × 3 service levels.
	await("the catalogue", "document.querySelectorAll('#tiers tbody tr').length === 45")
	require.Contains(t, eval("document.querySelector('#tiers tr[data-tier=\"kritis-500-gold\"]').innerText"), "500")
	await("the login link", "!document.getElementById('login').hidden")

	// Log in: the login app's form takes password and TOTP.
	require.NoError(t, p.Eval(ctx, "document.getElementById('login').click()", nil))
	await("the identity provider's form", "location.pathname === '/login' && document.getElementById('signin')")
	code := totpCode(testTOTPSecret, time.Now())
	require.NoError(t, p.Eval(ctx, fmt.Sprintf(`(() => {
		document.getElementById('username').value = 'alice';
		document.getElementById('password').value = 'alice-pw';
		document.getElementById('totp').value = %q;
		document.getElementById('signin').click();
	})()`, code), nil))
	await("the admin view", "location.pathname === '/catalog/admin/' && !document.getElementById('admin').hidden")
	require.Contains(t, eval("document.getElementById('who').innerText"), "Alice Admin (land-nrw; booking-admin; authentication: pwd+otp)")

	// Book a KRITIS tier for a room, naming who may schedule meetings under
	// it; a wrong organiser is caught in the page, before any request.
	require.NoError(t, p.Eval(ctx, `(() => {
		document.getElementById('tier').value = 'kritis-100-silver';
		document.getElementById('rooms').value = '!meeting:localhost';
		document.getElementById('organisers').value = '@alice:localhost, carol';
		document.getElementById('terms').checked = true;
		document.getElementById('submit').click();
	})()`, nil))
	await("the organisers' check", "document.getElementById('error').innerText.includes('carol is not a Matrix user ID')")
	require.Equal(t, "0", eval("String(document.querySelectorAll('#bookings tbody tr').length)"))
	require.NoError(t, p.Eval(ctx, `(() => {
		document.getElementById('organisers').value = '@alice:localhost, @carol:localhost,@alice:localhost';
		document.getElementById('submit').click();
	})()`, nil))
	await("the booking", "document.querySelectorAll('#bookings tbody tr').length === 1")
	row := eval("document.querySelector('#bookings tbody tr').innerText")
	require.Contains(t, row, "kritis-100-silver")
	require.Contains(t, row, "active")
	require.Contains(t, row, "!meeting:localhost")
	require.Equal(t, "@alice:localhost, @carol:localhost", eval("document.querySelector('#bookings tbody tr .organisers').innerText"))
	require.Empty(t, eval("document.getElementById('error').innerText"))
	bookingID := eval("document.querySelector('#bookings tbody tr').dataset.booking")
	require.True(t, strings.HasPrefix(bookingID, "bk_"), bookingID)

	// A booking outside the tier's terms is refused with the reason.
	require.NoError(t, p.Eval(ctx, `(() => {
		document.getElementById('terms').checked = false;
		document.getElementById('submit').click();
	})()`, nil))
	// The browser's own validation stops the form without the checkbox.
	require.Equal(t, "1", eval("String(document.querySelectorAll('#bookings tbody tr').length)"))

	// Cancel it.
	require.NoError(t, p.Eval(ctx, "document.querySelector('#bookings tbody tr .act-cancel').click()", nil))
	await("the cancellation", "document.querySelector('#bookings tbody tr .state').innerText === 'cancelled'")
	require.Equal(t, "0", eval("String(document.querySelectorAll('#bookings tbody tr .act-cancel').length)"))

	// The server agrees.
	counts := auditCounts(t, s)
	require.Equal(t, 1, counts["admin:book"])
	require.Equal(t, 1, counts["admin:cancel"])
	require.Equal(t, 1, counts["admin:login"])
	require.Empty(t, eval("document.getElementById('error').innerText"))

	// The booking as the server stored it lists the organisers.
	stored := eval(`(async () => JSON.stringify((await call('GET', 'bookings/` + bookingID + `')).organisers))()`)
	require.Equal(t, `["@alice:localhost","@carol:localhost"]`, stored)

	// The server refuses an organiser that is no Matrix user ID (markup
	// included), naming the field.
	refused := eval(`(async () => {
		const t = catalogue.tiers.find((x) => x.id === 'public-20-gold');
		const r = await fetch(api + 'bookings', {method: 'POST', credentials: 'same-origin',
			headers: {'Content-Type': 'application/json', 'X-GXConf-CSRF': '1'},
			body: JSON.stringify({tier: t.id, unit: 'dateRange', valid_from: new Date().toISOString(),
				valid_until: new Date(Date.now() + 3600e3).toISOString(), accept_terms: catalogue.terms[t.level],
				organisers: ['@<img/src=x/onerror=window.pwned=1>:localhost']})});
		return r.status + ' ' + (await r.text());
	})()`)
	require.True(t, strings.HasPrefix(refused, "400 "), refused)
	require.Contains(t, refused, "organisers:")

	// What the server stores is shown as text: markup in a room ID another
	// admin entered through the API (room IDs are opaque) does not run.
	require.NoError(t, p.Eval(ctx, `(async () => {
		const t = catalogue.tiers.find((x) => x.id === 'public-20-gold');
		await call('POST', 'bookings', {tier: t.id, unit: 'dateRange', valid_from: new Date().toISOString(),
			valid_until: new Date(Date.now() + 3600e3).toISOString(), accept_terms: catalogue.terms[t.level],
			rooms: ['!<img/src=x/onerror=window.pwned=1>:localhost']});
		await loadBookings();
	})()`, nil))
	await("the second booking", "document.querySelectorAll('#bookings tbody tr').length === 2")
	require.Contains(t, eval("document.getElementById('bookings').innerText"), "!<img/src=x/onerror=window.pwned=1>:localhost")
	require.Equal(t, "0", eval("String(document.querySelectorAll('#bookings img').length)"))
	require.Equal(t, "undefined", eval("typeof window.pwned"))
}
