# The agent's image for those with a Docker engine (docker build -t driftwatch .).
# `make image` builds the same without one: a static binary and a CA bundle
# on an empty base, run as non-root (tools/image).
FROM golang:1.26 AS build
WORKDIR /src
ENV GOTOOLCHAIN=local CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN go build -trimpath -tags=fieldsv1string -ldflags "-s -w -X main.version=${VERSION}" -o /driftwatch .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /driftwatch /driftwatch
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/driftwatch"]
CMD ["agent"]
