package lab

import (
	"testing"

	"github.com/quorumlock/quorumlock/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
