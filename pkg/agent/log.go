package agent

import "log"

func klogLogger() *log.Logger { return log.New(logWriter{}, "", 0) }
